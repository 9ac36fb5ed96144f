"""The training core shared by `aezoo train`, every recipe and fine-tuning.

What it adds to `model.fit`: a precision policy (mixed_float16 on a GPU by default), a
tf.distribute strategy, data order and corruption noise that are pure functions of
(seed, epoch, step), an atomic checkpoint every epoch that `--resume` continues exactly,
early stopping on validation loss, and a clear stop when the loss turns NaN.
"""

import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.contrastive import ContrastiveTraining
from zoo.dataset_examples import DatasetExamples
from zoo.errors import ZooError
from zoo.layers import batch_norm_layers

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
STATE_FILE = "state.json"
BEST_FILE = "best.keras"
PRECISE_BN_EXAMPLES = 4096  # training inputs the batch-norm statistics are recomputed over each epoch
WORKER_TIMEOUT_ENV = "AEZOO_WORKER_TIMEOUT"
WORKER_TIMEOUT_SECONDS = 120  # default wait for the peers listed in TF_CONFIG
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'


@dataclasses.dataclass
class TrainSettings:
    """How to train; every field is a `[train]` key in a recipe config.

    Args:
        epochs: passes over the training data.
        batch_size: global batch (split over replicas under a distribution strategy).
        learning_rate: the optimizer's (peak) learning rate.
        optimizer: "adam", or "adamw" (Adam with decoupled weight decay `weight_decay`).
        weight_decay: AdamW's decoupled weight decay per step, relative to the learning rate.
        lr_schedule: "constant", or "cosine" (decays to 0 over the run's steps).
        warmup_epochs: the learning rate ramps linearly from 0 over this many epochs (may be
            fractional; 0: no warm-up).
        gradient_clip_norm: gradients are rescaled to at most this global norm (0: no clipping).
        use_ema: keep an exponential moving average of the weights (Keras' `use_ema`), validate
            with it, and return it: the averaged weights of the best epoch.
        ema_momentum: the average's momentum (closer to 1: a longer memory).
        loss: reconstruction loss of plain autoencoders: "bce", "mse" or "psnr" (minus each image's
            PSNR: trains for the mean per-image PSNR the restoration recipes report); a VAE
            brings its own.
        contrastive_weight: > 0 adds SimCLR's contrastive term on the code of two random views
            of each image, with this weight, to an image autoencoder's reconstruction loss
            (`zoo.contrastive.ContrastiveTraining`); 0: reconstruction only.
        patience: epochs without validation improvement before stopping (0: never stop early);
            the best epoch's weights are kept.
        validation_fraction: share of the training split held out for validation.
        precision: "auto" (mixed_float16 on a GPU, float32 otherwise) or a Keras policy name.
        strategy: "auto" (mirrored over several GPUs, else default), "default", "mirrored",
            "multi_worker" (reads TF_CONFIG).
        seed: seeds weights, data order and noise.
        deterministic: force deterministic TF kernels (bitwise-repeatable GPU runs; slower).
        verbose: Keras progress output (1: a bar on a terminal, a line per epoch when stdout is
            redirected to a file or pipe; 2: always a line per epoch; 0: silent).
    """

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    gradient_clip_norm: float = 0.0
    use_ema: bool = False
    ema_momentum: float = 0.99
    loss: str = "bce"
    contrastive_weight: float = 0.0
    patience: int = 5
    validation_fraction: float = 0.1
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 0
    deterministic: bool = False
    verbose: int = 1

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ZooError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ZooError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        zoo.losses.get(self.loss)
        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ZooError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if int(self.seed) < 0:  # NumPy's generators take none
            raise ZooError(f"train.seed must be >= 0, got {self.seed}")
        if not 0 <= self.validation_fraction < 1:
            raise ZooError(f"train.validation_fraction must be in [0, 1), got {self.validation_fraction}")
        for key, choices in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, key) not in choices:
                raise ZooError(f"train.{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        for key in ("learning_rate", "weight_decay", "warmup_epochs", "gradient_clip_norm", "contrastive_weight"):
            if float(getattr(self, key)) < 0 or not math.isfinite(getattr(self, key)):
                raise ZooError(f"train.{key} must be a finite number >= 0, got {getattr(self, key)}")
        if not 0 < self.ema_momentum < 1:
            raise ZooError(f"train.ema_momentum must be in (0, 1), got {self.ema_momentum}")


def resolve_precision(precision):
    """The Keras dtype policy name for `precision` ("auto": mixed_float16 where a GPU exists)."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


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


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
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


@functools.cache
def _multi_worker():
    # One per process: TensorFlow starts the worker's gRPC server once, so every model a
    # recipe trains shares it.
    index, workers = cluster_worker()
    wait_for_peers(index, workers, worker_timeout())
    return _MultiWorkerStrategy()


def make_strategy(name):
    """A tf.distribute strategy: mirrored over local GPUs (or the CPU), multi-worker from TF_CONFIG."""
    if name == "multi_worker":
        return _multi_worker()
    gpus = tuple(d.name for d in tf.config.list_logical_devices("GPU"))
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPU devices (MirroredStrategy alone would take one).
        return _mirrored(gpus or tuple(d.name for d in tf.config.list_logical_devices("CPU")))
    if name == "auto" and len(gpus) > 1:
        return _mirrored(gpus)
    return tf.distribute.get_strategy()


@functools.cache
def _mirrored(devices):
    # One strategy per device set and process: a second MirroredStrategy reuses the first one's
    # collective-op keys, and the two then abort each other's all-reduces.
    return tf.distribute.MirroredStrategy(list(devices))


def seed_everything(seed, deterministic=False):
    """Seeds Python, NumPy and TensorFlow; `deterministic` also forces deterministic TF kernels.

    On the CPU the kernels used here already repeat bit for bit (the resume test checks it),
    so the slower deterministic mode is only needed for bitwise-repeatable GPU runs.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@functools.lru_cache(maxsize=1)  # every batch of an epoch asks for the same order
def epoch_order(seed, epoch, n, batch_size):
    """The example indices of `epoch`: a permutation seeded by (seed, epoch), each batch's slice
    sorted (contiguous reads from arrays, nearby files from folders)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n, batch_size):
        order[start : start + batch_size].sort()
    return order


class EpochBatches(keras.utils.PyDataset):
    """Mini-batches for epochs initial_epoch .. epochs-1 as one sequence.

    Batch `step` of epoch `e` is a pure function of (seed, e, step): the order is a seeded
    permutation per epoch and `transform` (e.g. adding noise) gets a generator seeded the same
    way. A resumed run therefore sees exactly the batches an uninterrupted run would have.

    Args:
        x: inputs; y: targets (default: x, an autoencoder's target).
        transform: optional `f(x_batch, y_batch, rng) -> (inputs, targets)`.
    """

    def __init__(self, x, y, batch_size, seed, initial_epoch, epochs, transform=None):
        super().__init__()
        self.x, self.y = x, x if y is None else y
        self.batch_size, self.seed, self.transform = batch_size, seed, transform
        self.initial_epoch, self.epochs = initial_epoch, epochs
        self.steps_per_epoch = math.ceil(len(x) / batch_size)

    def __len__(self):
        return (self.epochs - self.initial_epoch) * self.steps_per_epoch

    def __getitem__(self, index):
        epoch, step = divmod(index, self.steps_per_epoch)
        epoch += self.initial_epoch
        batch = epoch_order(self.seed, epoch, len(self.x), self.batch_size)[step * self.batch_size : (step + 1) * self.batch_size]
        x, y = self.x[batch], self.y[batch]
        if self.transform is not None:
            x, y = self.transform(x, y, np.random.default_rng([self.seed, epoch, step]))
        return x, y


def stream_batches(source, labels, batch_size, seed, initial_epoch, epochs, transform=None):
    """The tf.data counterpart of `EpochBatches` for streamed examples (`ImageFiles`, `MappedRows`):
    the same order and transform seeds, so streamed and in-memory training see the same batches;
    examples are read in parallel. A user's `DatasetExamples` has no random access: its epochs
    are a shuffle buffer seeded by (seed, epoch) instead of the permutation."""
    n = len(source)

    def epoch_batches(epoch):
        if isinstance(source, DatasetExamples):
            examples = source.shuffled(seed, epoch)
        else:
            order = tf.numpy_function(lambda e: epoch_order(seed, int(e), n, batch_size), [epoch], tf.int64)
            examples = source.examples(tf.ensure_shape(order, [n]), labels)
        return with_transform(examples.batch(batch_size), transform, [seed, epoch])

    if isinstance(source, DatasetExamples):
        # One dataset per epoch, chained: a shuffle seed must be a Python int, as TensorFlow
        # compares it with 0 in Python when the global seed is 0 (a tensor epoch fails there).
        per_epoch = [epoch_batches(epoch) for epoch in range(initial_epoch, epochs)]
        batches = functools.reduce(tf.data.Dataset.concatenate, per_epoch)
    else:
        batches = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    return batches.prefetch(tf.data.AUTOTUNE)


def with_transform(batches, transform, seed):
    """`batches` with `transform(x, y, rng)` applied to each, rng seeded by (*seed, batch number)."""
    if transform is None:
        return batches

    def apply(batch, step):
        x, y = batch
        seeds = tf.stack([tf.cast(s, tf.int64) for s in seed] + [step])
        inputs, targets = tf.numpy_function(
            lambda xb, yb, s: transform(xb, yb, np.random.default_rng(s.tolist())), [x, y, seeds], [x.dtype, y.dtype]
        )
        return tf.ensure_shape(inputs, x.shape), tf.ensure_shape(targets, y.shape)

    return tf.data.Dataset.zip(batches, tf.data.Dataset.range(2**62)).map(apply)


def make_optimizer(settings, steps_per_epoch):
    """The optimizer of `settings`: Adam or AdamW, the learning-rate schedule with its warm-up,
    global-norm gradient clipping and the weight average, for runs of `steps_per_epoch` steps an epoch.

    The schedule is a function of the optimizer's step count, which checkpoints hold, so a
    resumed run continues it where it stopped.
    """
    warmup_steps = round(settings.warmup_epochs * steps_per_epoch)
    learning_rate = settings.learning_rate
    if settings.lr_schedule == "cosine" or warmup_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup_steps else settings.learning_rate,
            decay_steps=max(1, settings.epochs * steps_per_epoch - warmup_steps),
            alpha=0.0 if settings.lr_schedule == "cosine" else 1.0,  # alpha=1: no decay, a constant rate after warm-up
            warmup_target=settings.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    options = {
        "learning_rate": learning_rate,
        "global_clipnorm": settings.gradient_clip_norm or None,
        "use_ema": settings.use_ema,
        "ema_momentum": settings.ema_momentum,
    }
    if settings.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=settings.weight_decay, **options)
    return keras.optimizers.Adam(**options)


def compile_model(model, settings, optimizer):
    """A plain autoencoder gets the reconstruction loss of `settings`, a VAE its own objective."""
    if isinstance(model, zoo.VAE):
        model.compile(optimizer=optimizer)
    else:
        model.compile(optimizer=optimizer, loss=zoo.losses.get(settings.loss))
    return model


def compile_classifier(model, settings, optimizer):
    """Sparse categorical cross-entropy and accuracy, for recipes that train a classifier (`compile_fn`)."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def recompute_batch_norm_statistics(model, batches):
    """Sets every BatchNormalization layer's moving mean and variance to the average of its batch
    statistics over `batches` (an iterable of input batches), under the model's current weights
    ("precise BN", Wu & Johnson, 2021). Each batch is weighted equally.

    Why: the moving averages (momentum 0.99) lag the weights by about a hundred steps, and
    evaluation then normalises with statistics the trained network never produced. A
    classifier fitted on 1% of the labels takes a few hundred steps in all, so its averages
    still hold much of their initial 0 and 1; a denoiser at learning rate 2e-3 moves its weights
    enough in a hundred steps that it scored 13.7 dB on its moving averages and 18.4 dB on
    recomputed ones.
    """
    norms = batch_norm_layers(model)
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    try:
        for index, batch in enumerate(batches):
            for norm in norms:
                norm.momentum = index / (index + 1)  # a cumulative average: the first batch replaces the old value
            model(batch, training=True)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes the batch-norm statistics (`recompute_batch_norm_statistics`) once an epoch,
    before validation or, without validation, before the checkpoint, so that validation, the
    best-epoch choice and every saved model use statistics of the weights they hold.

    Args:
        input_batches: a function returning a fresh iterable of input batches (the same ones each
            epoch: a fixed sample of the training inputs, transform applied).
    """

    def __init__(self, input_batches):
        super().__init__()
        self.input_batches = input_batches
        self.recomputed = False

    def on_epoch_begin(self, epoch, logs=None):
        self.recomputed = False

    def on_test_begin(self, logs=None):
        self._recompute()

    def on_epoch_end(self, epoch, logs=None):
        self._recompute()

    def _recompute(self):
        if not self.recomputed:
            recompute_batch_norm_statistics(self.model, self.input_batches())
            self.recomputed = True


def precise_batch_norm_sample(batches, examples, batch_size):
    """A function returning the first full batches of `batches` (one epoch of `examples` as an
    `EpochBatches` or a tf.data stream of (inputs, targets)): PRECISE_BN_EXAMPLES inputs at most,
    at least one batch."""
    count = max(1, min(PRECISE_BN_EXAMPLES, examples) // batch_size)
    if isinstance(batches, tf.data.Dataset):
        return lambda: (inputs for inputs, _ in batches.take(count))
    return lambda: (batches[index][0] for index in range(count))


def atomic_write(path, write):
    """Calls `write(temporary_path)` then renames it to `path`; on failure nothing at `path` changes."""
    path = Path(path)
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ZooError(
            f"could not write {path} ({error.strerror or error}); free disk space or choose another --out; "
            "earlier checkpoints are intact, continue with --resume"
        ) from None


class CheckpointCallback(keras.callbacks.Callback):
    """Every epoch: checkpoint (model + optimizer) and state atomically, early stopping, NaN guard."""

    def __init__(self, directory, run_name, settings, state):
        super().__init__()
        self.directory, self.run_name, self.settings = Path(directory), run_name, settings
        self.state = state
        self.non_finite = None

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.non_finite = f"loss became NaN or infinite at epoch {self.state['epoch'] + 1}, step {batch + 1}"
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self.started, self.earlier_seconds = time.perf_counter(), self.state.get("train_seconds", 0.0)

    def on_epoch_end(self, epoch, logs=None):
        # The logged loss alone is not enough: depending on the CPU's NaN handling in min/max and
        # clipping, a loss can stay finite while the weights have already turned NaN. No
        # checkpoint is written unless every weight is finite.
        if not self.non_finite and not all(np.isfinite(w).all() for w in self.model.get_weights()):
            self.non_finite = f"weights became NaN or infinite during epoch {epoch + 1}"
            self.model.stop_training = True
        if self.non_finite:
            return  # keep the last good checkpoint
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        state = self.state
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["train_seconds"] = self.earlier_seconds + time.perf_counter() - self.started  # summed over resumes
        name = f"epoch-{epoch + 1:04d}.keras"
        atomic_write(self.directory / name, self.model.save)
        monitor = "val_loss" if "val_loss" in row else "loss"
        if state["best"] is None or row[monitor] < state["best"]["value"]:
            state["best"] = {"epoch": epoch + 1, "value": row[monitor], "monitor": monitor}
            state["wait"] = 0
            # A file copy, not a second serialisation: checkpoints stay cheap on short epochs.
            atomic_write(self.directory / BEST_FILE, lambda p: shutil.copyfile(self.directory / name, p))
        else:
            state["wait"] += 1
        previous, state["checkpoint"] = state.get("checkpoint"), name
        atomic_write(self.directory / STATE_FILE, lambda p: Path(p).write_text(json.dumps(state, indent=1)))
        if previous and previous != name:
            (self.directory / previous).unlink(missing_ok=True)
        if self.settings.patience and state["wait"] >= self.settings.patience:
            self.model.stop_training = True
            state["stopped_early"] = True


def _new_state(run_name, settings):
    return {"run": run_name, "epoch": 0, "history": [], "best": None, "wait": 0, "checkpoint": None, "train_seconds": 0.0,
            "settings": _resumable_settings(settings)}


def _resumable_settings(settings):
    """The settings a resume must keep (all but the progress output), as the state file holds them."""
    return {key: value for key, value in dataclasses.asdict(settings).items() if key != "verbose"}


def _check_resumed_settings(saved, settings, checkpoints):
    """Refuses to resume with other training settings: the checkpoint's optimizer would train on with
    its own. More epochs are what a resume is for, except under a cosine schedule, which has
    already decayed to 0 at the run's last epoch. (State files from before settings were saved:
    not checked.)"""
    if saved is None:
        return
    asked = _resumable_settings(settings)
    if settings.lr_schedule != "cosine":
        saved, asked = {**saved, "epochs": None}, {**asked, "epochs": None}
    changed = config_changes({"train": saved}, {"train": asked})
    if changed:
        why = " (a cosine schedule ends at the run's last epoch: more epochs need a new run)" if "train.epochs" in changed else ""
        raise ZooError(f"{checkpoints} holds a run trained with other settings ({changed}){why}; resume with the "
                       "settings it was trained with or choose another --out")


def _states(run_dir):
    """The checkpoint states of every model trained in run_dir (a recipe trains one per tag)."""
    return list(Path(run_dir).glob(f"**/checkpoints/{STATE_FILE}"))


def train_seconds(run_dir):
    """Training time of every model in run_dir, summed over all resumes of the run."""
    return sum(json.loads(path.read_text()).get("train_seconds", 0.0) for path in _states(run_dir))


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


def claim_run_dir(run_dir, resume, marker):
    """Checks `run_dir` before a run writes to it and returns whether the run resumes.

    A folder holding `marker` (the first thing a run writes, e.g. config.json) but no completed
    epoch, no model and no metrics is a run that failed before it trained: nothing in it is worth
    keeping, so it is cleared and the run starts afresh, with or without --resume. Any other
    non-empty folder is refused unless the run resumes it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return resume
    if (run_dir / marker).exists() and not any((run_dir / name).exists() for name in ("model.keras", "metrics.json")):
        try:
            completed = any(json.loads(path.read_text()).get("epoch", 0) > 0 for path in _states(run_dir))
        except (json.JSONDecodeError, UnicodeDecodeError):
            completed = True  # unreadable: not ours to delete
        if not completed:
            shutil.rmtree(run_dir)
            print(f"aezoo: {run_dir} holds a run that never completed an epoch; starting afresh", file=sys.stderr)
            return False
    if not resume:
        raise ZooError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    return True


def config_changes(saved, asked):
    """'key: saved -> asked' for every setting (dotted key) that differs between two resolved configs; '' if none."""

    def flat(config, prefix=""):
        if not isinstance(config, dict):
            return {prefix: config}
        return {key: value for name, item in config.items() for key, value in flat(item, f"{prefix}{name}.").items()}

    # through JSON, as the saved config went: tuples compare as lists
    saved, asked = flat(json.loads(json.dumps(saved))), flat(json.loads(json.dumps(asked)))
    return ", ".join(
        f"{key[:-1]}: {saved.get(key, 'unset')} -> {asked.get(key, 'unset')}"
        for key in sorted(saved.keys() | asked.keys())
        if saved.get(key, ...) != asked.get(key, ...)
    )


def read_state(run_dir, run_name):
    """The checkpoint state of `run_dir`, checked to belong to `run_name`."""
    path = Path(run_dir, "checkpoints", STATE_FILE)
    if not path.exists():
        raise ZooError(f"nothing to resume: no checkpoint in {path.parent}; run again without --resume")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ZooError(f"{path} is corrupt; start a new run (another --out) or remove the folder") from None
    if state.get("run") != run_name:
        raise ZooError(
            f"{run_dir} holds a {state.get('run')!r} run, not {run_name!r}; resume it with its own command or choose another --out"
        )
    return state


def train(
    build_model,
    x,
    y=None,
    *,
    settings,
    run_dir,
    run_name,
    resume=False,
    transform=None,
    validation=None,
    compile_fn=None,
    callbacks=(),
):
    """Trains `build_model()` (called inside the precision policy and strategy scope) on (x, y).

    Args:
        build_model: returns an uncompiled zoo model.
        x, y: training inputs and targets (y defaults to x); x may be `ImageFiles` or `MappedRows`, streamed
            through tf.data with the same per-epoch order and transform seeds (y then None or
            labels as an array), or a finite, unbatched `tf.data.Dataset` of x or (x, label)
            elements (y None; see `zoo.dataset_examples.DatasetExamples`).
        settings: a `TrainSettings`.
        run_dir: where checkpoints/, logs/ and history.csv go.
        run_name: names the run (recipe or model) so `resume` refuses another run's folder.
        resume: continue from the last complete epoch in run_dir/checkpoints.
        transform: per-batch `f(x, y, rng) -> (inputs, targets)`, also applied to validation data
            (to streamed validation data batch by batch, each batch seeded by its number).
        validation: (x_val, y_val); default the last `validation_fraction` of (x, y).
        compile_fn: `f(model, settings, optimizer)` compiling the model with the optimizer of
            `settings` (default `compile_model`: the reconstruction loss); e.g.
            `compile_classifier` for cross-entropy.
        callbacks: more Keras callbacks for `fit`.

    Returns:
        (model with the best epoch's weights, list of per-epoch metric rows).

    Example:
        >>> model, history = train(lambda: zoo.create("conv_ae", (28, 28, 1), 16), x,
        ...                        settings=TrainSettings(epochs=5), run_dir="runs/a", run_name="conv_ae")
    """
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    if isinstance(x, tf.data.Dataset):
        x = DatasetExamples(x)
    streaming = not isinstance(x, np.ndarray)  # ImageFiles, MappedRows or DatasetExamples
    reconstructs = y is None  # the targets are the inputs (the split below makes y a copy of x)
    if not streaming:
        zoo.data.check_finite(x, "training data")
    if validation is None and settings.validation_fraction:
        cut = len(x) - max(1, int(len(x) * settings.validation_fraction))
        if streaming:
            validation, x, y = (x[cut:], None if y is None else y[cut:]), x[:cut], None if y is None else y[:cut]
        else:
            y_all = x if y is None else y
            validation, x, y = (x[cut:], y_all[cut:]), x[:cut], y_all[:cut]
        if cut < 1:
            raise ZooError(
                f"{len(validation[0])} training example(s) and train.validation_fraction={settings.validation_fraction} "
                "leave none to train on; give more examples or set train.validation_fraction=0"
            )
    never_an_epoch = [settings.seed, 2**32 - 1]  # seeds the validation transform with a stream no epoch uses
    if validation is not None and not isinstance(validation[0], np.ndarray):
        batches = validation[0].examples(labels=validation[1]).batch(settings.batch_size)
        validation = with_transform(batches, transform, never_an_epoch).prefetch(tf.data.AUTOTUNE)
    elif validation is not None and transform is not None:
        validation = transform(*validation, np.random.default_rng(never_an_epoch))

    if settings.strategy == "multi_worker":  # each worker takes an equal part of every batch
        workers = len(cluster_worker()[1])
        if settings.batch_size % workers:
            raise ZooError(f"batch size {settings.batch_size} does not divide among {workers} workers; choose a multiple of {workers}")
    state = read_state(run_dir, run_name) if resume else _new_state(run_name, settings)
    seed_everything(settings.seed, settings.deterministic)
    strategy = make_strategy(settings.strategy)
    with precision_policy(settings.precision), strategy.scope():
        steps_per_epoch = math.ceil(len(x) / settings.batch_size)
        make_batches = stream_batches if streaming else EpochBatches
        build_trained = with_contrastive_term(build_model, settings)
        if resume:
            _check_resumed_settings(state.get("settings"), settings, checkpoints)
            model = keras.models.load_model(checkpoints / state["checkpoint"])
            _check_resumed_model(model, build_trained, checkpoints)
        else:
            optimizer = make_optimizer(settings, steps_per_epoch)
            model = (compile_fn or compile_model)(build_trained(), settings, optimizer)
            if reconstructs:
                _check_output_range(model, x)
        ended_before = state["epoch"] >= settings.epochs or state.get("stopped_early")  # a resumed, finished run
        if not ended_before:
            checkpoints.mkdir(parents=True, exist_ok=True)
            checkpoint = CheckpointCallback(checkpoints, run_name, settings, state)
            # Validation sees the averaged weights; checkpoints keep the raw ones (and the average in
            # the optimizer's state) so that a resumed run continues exactly.
            ema = [keras.callbacks.SwapEMAWeights()] if settings.use_ema else []
            # After the EMA swap, so that validation uses the averaged weights' statistics. Not
            # across workers: each would recompute from its own process (Keras' averages stay).
            precise_bn = []
            if settings.strategy != "multi_worker" and batch_norm_layers(model):
                sample = make_batches(x, y, settings.batch_size, settings.seed, 0, 1, transform)
                precise_bn = [PreciseBatchNorm(precise_batch_norm_sample(sample, len(x), settings.batch_size))]
            model.fit(
                make_batches(x, y, settings.batch_size, settings.seed, state["epoch"], settings.epochs, transform),
                epochs=settings.epochs,
                initial_epoch=state["epoch"],
                steps_per_epoch=steps_per_epoch,
                shuffle=False,  # the batches already order each epoch; Keras would reshuffle across epochs
                validation_data=validation,
                validation_batch_size=None if streaming else settings.batch_size,
                callbacks=[*ema, *precise_bn, checkpoint, keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False), *callbacks],
                # A progress bar redirected to a file is one long line of control codes.
                verbose=2 if settings.verbose == 1 and not sys.stdout.isatty() else settings.verbose,
            )
    if not ended_before:
        if checkpoint.non_finite:
            last = f"{checkpoints / state['checkpoint']}" if state["checkpoint"] else "none yet"
            raise ZooError(
                f"{checkpoint.non_finite}: training stopped; last good checkpoint: {last}; "
                "lower train.learning_rate or use --precision float32"
            )
        write_history(run_dir / "history.csv", state["history"])
    # Outside the strategy's scope: a multi-worker run hands back a model of this worker alone.
    return _finished(model, checkpoints, state, settings, run_name), state["history"]


def _check_output_range(model, targets):
    """Refuses reconstruction targets outside [0, 1] for a sigmoid output, which cannot give them back
    (in-memory arrays; streamed images are in [0, 1], streamed series rows are not scanned)."""
    network = getattr(model, "autoencoder", model)  # under the contrastive term's wrapper
    network = getattr(network, "backbone", network)  # a VAE's
    if not isinstance(targets, np.ndarray) or getattr(network, "output_activation", None) != "sigmoid":
        return
    low, high = float(targets.min()), float(targets.max())
    if low < 0 or high > 1:
        raise ZooError(
            f"the training data lies in [{low:.3g}, {high:.3g}] but the model's sigmoid output gives values in [0, 1] only; "
            "scale it to [0, 1], or for standardised data create the model with output_activation='linear' and train with loss mse"
        )


def with_contrastive_term(build_model, settings):
    """`build_model`, its model wrapped to train with `settings.contrastive_weight`'s contrastive term (0: as it is)."""
    if not settings.contrastive_weight:
        return build_model
    return lambda: ContrastiveTraining(build_model(), weight=settings.contrastive_weight, seed=settings.seed)


def _check_resumed_model(resumed, build_model, checkpoints):
    """Refuses to continue a checkpointed zoo model other than the one `build_model` asks for (e.g.
    another latent_dim): the checkpoint's would otherwise train on silently."""
    if not hasattr(resumed, "registry_name") and not isinstance(resumed, ContrastiveTraining):
        return  # a functional model (a classifier): its config holds generated layer names (and building one may cost a probe fit)
    asked = build_model()

    def options(model):
        weight = model.weight if isinstance(model, ContrastiveTraining) else 0.0
        model = model.autoencoder if isinstance(model, ContrastiveTraining) else model
        # Keras numbers the names of models built in one process: not an option
        config = {k: v for k, v in model.get_config().items() if k != "name"}
        return {"model": getattr(model, "registry_name", None), **config, "train.contrastive_weight": weight}

    changed = config_changes(options(resumed), options(asked))
    if changed:
        raise ZooError(f"{checkpoints} holds another model ({changed}); resume with the options it was trained "
                       "with or choose another --out")


def _finished(model, checkpoints, state, settings, run_name):
    """The model a run hands back: the best epoch's weights; on a multi-worker run, in a model
    of this worker alone (one of the strategy predicts across the workers)."""
    model = _restore_best(model, checkpoints, state, settings)
    if isinstance(model, ContrastiveTraining):  # its projection head only served the training
        model = model.autoencoder
    if settings.strategy != "multi_worker":
        return model
    local = keras.models.clone_model(model)
    local.set_weights(model.get_weights())
    # Workers that trained in step print the same line.
    index, workers = cluster_worker()
    weights_sum = sum(float(np.abs(w).astype("float64").sum()) for w in local.get_weights())
    print(f"aezoo: worker {index} of {len(workers)} trained {run_name}; sum of |weights| {weights_sum!r}", file=sys.stderr)
    return local


def _restore_best(model, checkpoints, state, settings):
    if state["best"] is None:
        return model
    if settings.use_ema:  # the best checkpoint's averaged weights, which its optimizer state holds
        best = keras.models.load_model(checkpoints / BEST_FILE)
        best.optimizer.finalize_variable_values(best.trainable_variables)
        model.set_weights(best.get_weights())
    elif state["best"]["epoch"] != state["epoch"]:
        model.load_weights(checkpoints / BEST_FILE)
    return model


def write_history(path, rows):
    """Per-epoch metrics as CSV (columns: epoch, then every metric seen)."""
    columns = ["epoch", *sorted({k for row in rows for k in row} - {"epoch"})]

    def write(temporary):
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
