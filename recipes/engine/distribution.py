"""Where and in what precision training runs: the Keras dtype policy and the tf.distribute
strategy, with the multi-worker setup (TF_CONFIG checked, peers awaited with a clear error,
non-chief workers writing to a temporary folder)."""

import contextlib
import functools
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import keras

from zoo.backend import import_tensorflow, on_jax
from zoo.errors import ZooError

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
WORKER_TIMEOUT_ENV = "AEZOO_WORKER_TIMEOUT"
WORKER_TIMEOUT_SECONDS = 120  # default wait for the peers listed in TF_CONFIG
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'


def resolve_precision(precision):
    """The Keras dtype policy name for `precision` ("auto": mixed_float16 where a GPU exists)."""
    if precision == "auto":
        return "mixed_float16" if has_gpu() else "float32"
    return precision


def has_gpu():
    """Whether the backend sees a GPU."""
    if on_jax():
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    return bool(import_tensorflow("a GPU query").config.list_physical_devices("GPU"))


@contextlib.contextmanager
def precision_policy(precision):
    """Sets the global Keras dtype policy for models built inside, and restores the old one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(precision))
    try:
        yield keras.config.dtype_policy().name
    finally:
        keras.config.set_dtype_policy(previous)


def cluster_worker():
    """(this worker's index, the worker addresses) from TF_CONFIG, checked; worker 0 is the chief."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ZooError(f"--strategy multi_worker needs TF_CONFIG describing the cluster on every worker, e.g. {TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(text)
        workers, task = config["cluster"]["worker"], config["task"]
        index = task["index"]
        valid = task["type"] == "worker" and isinstance(index, int) and 0 <= index < len(workers) and len(workers) > 0
        valid = valid and all(isinstance(address, str) and address.rpartition(":")[2].isdigit() for address in workers)
    except (json.JSONDecodeError, KeyError, TypeError):
        valid = False
    if not valid:
        shown = text if len(text) < 200 else text[:200] + "..."
        raise ZooError(f"TF_CONFIG must be JSON like {TF_CONFIG_EXAMPLE} (index < number of workers), got {shown!r}")
    return index, workers


def worker_timeout():
    """Seconds a worker waits for its peers: AEZOO_WORKER_TIMEOUT, default WORKER_TIMEOUT_SECONDS."""
    text = os.environ.get(WORKER_TIMEOUT_ENV, str(WORKER_TIMEOUT_SECONDS))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise ZooError(f"{WORKER_TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return seconds


def wait_for_peers(index, workers, timeout):
    """A barrier before TensorFlow starts this worker: listens on its port until every peer has
    connected, and connects to every peer's port; raises ZooError after `timeout` seconds.

    TensorFlow alone waits for a missing peer for up to an hour, silently. Every worker listens
    before it connects and closes only once all peers have reached it, so none waits on a
    closed port; the port is free again for TensorFlow's server afterwards.
    """
    deadline = time.monotonic() + timeout
    port = int(workers[index].rpartition(":")[2])
    try:
        server = socket.create_server(("", port))
    except OSError as error:
        raise ZooError(f"worker {index} cannot listen on port {port} ({error.strerror}); free it or change TF_CONFIG") from None
    unreached = [i for i in range(len(workers)) if i != index]
    unheard = set(unreached)
    with server:
        server.settimeout(0.1)
        while unreached or unheard:
            if time.monotonic() > deadline:
                missing = ", ".join(f"worker {i} at {workers[i]}" for i in sorted(set(unreached) | unheard))
                raise ZooError(
                    f"worker {index} could not reach {missing} within {timeout:g} s; start the same command on "
                    f"every worker in TF_CONFIG, check their addresses (or raise {WORKER_TIMEOUT_ENV})"
                )
            if unreached:
                host, _, peer_port = workers[unreached[0]].rpartition(":")
                try:
                    with socket.create_connection((host, int(peer_port)), timeout=1) as peer:
                        peer.sendall(f"aezoo worker {index}\n".encode())
                    unreached.pop(0)
                except OSError:
                    pass
            # Peers name themselves: a peer that passed its barrier already connects with
            # TensorFlow's gRPC, which must not count.
            try:
                connection = server.accept()[0]
                with connection:
                    connection.settimeout(1)
                    words = connection.recv(64).decode(errors="replace").split()
                if words[:2] == ["aezoo", "worker"] and words[2:3] and words[2].isdigit():
                    unheard.discard(int(words[2]))
            except OSError:
                pass


@functools.cache
def _multi_worker():
    # One per process: TensorFlow starts the worker's gRPC server once, so every model a
    # recipe trains shares it.
    index, workers = cluster_worker()
    wait_for_peers(index, workers, worker_timeout())
    return _multi_worker_strategy_class()()


def _multi_worker_strategy_class():
    tf = import_tensorflow("--strategy multi_worker (tf.distribute)")

    class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy with the `reduce` Keras 3's fit expects of it (Keras 3.15, TF 2.21).

        fit reduces its first (x, y) batch to build the model symbolically, which this strategy
        cannot do for a tuple (MirroredStrategy's can), and each epoch's scalar metrics along
        axis 0, which a scalar lacks. Here each element is reduced on its own, a scalar across the
        workers only. Every worker makes the same calls in the same order, so the all-reduces match.
        """

        def reduce(self, reduce_op, value, axis):
            parent = super()

            def reduce_one(one):
                scalar = self.experimental_local_results(one)[0].shape.rank == 0
                return parent.reduce(reduce_op, one, None if scalar else axis)

            return tf.nest.map_structure(reduce_one, value)

    return MultiWorkerStrategy


def make_strategy(name):
    """A tf.distribute strategy: mirrored over local GPUs (or the CPU), multi-worker from TF_CONFIG.
    On JAX: one device ("auto", "default"); the others need TensorFlow."""
    if on_jax() and name in ("auto", "default"):
        return SingleDevice()
    tf = import_tensorflow(f"--strategy {name} (tf.distribute)")
    if name == "multi_worker":
        return _multi_worker()
    gpus = tuple(d.name for d in tf.config.list_logical_devices("GPU"))
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPU devices (MirroredStrategy alone would take one).
        return _mirrored(gpus or tuple(d.name for d in tf.config.list_logical_devices("CPU")))
    if name == "auto" and len(gpus) > 1:
        return _mirrored(gpus)
    return tf.distribute.get_strategy()


class SingleDevice:
    """Training on the backend's default device, without tf.distribute (the JAX backend)."""

    def scope(self):
        return contextlib.nullcontext()


@functools.cache
def _mirrored(devices):
    # One strategy per device set and process: a second MirroredStrategy reuses the first one's
    # collective-op keys, and the two then abort each other's all-reduces.
    return import_tensorflow("--strategy mirrored").distribute.MirroredStrategy(list(devices))


@contextlib.contextmanager
def worker_run_dir(run_dir, strategy, resume):
    """The folder this process writes a run to: `run_dir`, except on the non-chief workers of a
    multi-worker run, which write to a temporary folder removed at the end.

    Keras' pattern for multi-worker checkpoints: every worker saves (the saves read the same
    distributed variables in step), only the chief's files are kept. With --resume the
    temporary folder starts as a copy of `run_dir` (a shared folder, or the chief's copied to
    each machine), so every worker loads the chief's last checkpoint; without it, it starts empty.
    """
    if strategy != "multi_worker" or cluster_worker()[0] == 0:
        yield Path(run_dir)
        return
    temporary = Path(tempfile.mkdtemp(prefix="aezoo-worker-"))
    try:
        if resume and Path(run_dir).is_dir():
            shutil.copytree(run_dir, temporary, dirs_exist_ok=True)
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
