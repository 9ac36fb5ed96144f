"""--strategy multi_worker: two worker processes on 127.0.0.1 train in step (each its half of every
batch), only the chief keeps the run folder, and a run whose workers were killed resumes; a cluster
whose peer never starts, a malformed TF_CONFIG and a batch that does not divide among the workers
each fail in one line."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes.cli import main
from recipes.engine import checkpoints, distribution

pytestmark = [pytest.mark.slow, pytest.mark.multiworker]

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "dense_ae", "--data", "digits", "--batch-size", "64", "--latent-dim", "4", "--precision", "float32",
         "--set", "hidden_units=[16]", "--strategy", "multi_worker"]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(addresses, index):
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def start_workers(out, epochs, resume=False):
    """Two `aezoo train` workers of one cluster on free local ports, writing `out` (the chief's)."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    argv = [sys.executable, "-m", "recipes.cli", *TRAIN, "--epochs", str(epochs), "--out", str(out)]
    return [
        subprocess.Popen(argv + (["--resume"] if resume else []), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config(addresses, i)})
        for i in range(2)
    ]


def finish(workers):
    """(stdout, stderr) of each worker, after checking both exited 0 and trained to the same weights."""
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    trained = [next(line for line in err.splitlines() if "sum of |weights|" in line) for _, err in outputs]
    assert trained[0].replace("worker 0", "worker 1") == trained[1]  # the same weights, bit for bit
    return outputs


def test_two_workers_train_in_step_and_only_the_chief_keeps_the_run(tmp_path):
    out = tmp_path / "run"
    (chief_out, _), (other_out, _) = finish(start_workers(out, epochs=2))
    assert chief_out.strip().endswith(f"-> {out}")
    temporary = Path(other_out.strip().rsplit("-> ", 1)[1])
    assert temporary != out and not temporary.exists()  # the other worker's copy is gone
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "history.csv", "logs", "metrics.json", "model.keras"]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert len(json.loads((out / "checkpoints" / checkpoints.STATE_FILE).read_text())["history"]) == 2


def test_a_run_whose_workers_were_killed_resumes_to_the_end(tmp_path):
    out = tmp_path / "run"
    state = out / "checkpoints" / checkpoints.STATE_FILE
    workers = start_workers(out, epochs=40)
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1) and time.time() < deadline:
        time.sleep(0.5)
    for worker in workers:  # a lost machine: no worker finishes the epoch it is in
        worker.kill()
        worker.communicate()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 40 and not (out / "model.keras").exists()

    finish(start_workers(out, epochs=done + 2, resume=True))
    history = json.loads(state.read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(1, done + 3))
    assert json.loads((out / "metrics.json").read_text())["epochs"] == done + 2


def test_a_worker_whose_peer_never_starts_fails_in_one_line(tmp_path):
    own, missing = free_ports(2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", distribution.WORKER_TIMEOUT_ENV: "3",
           "TF_CONFIG": tf_config([f"127.0.0.1:{own}", f"127.0.0.1:{missing}"], 0)}
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "recipes.cli", *TRAIN, "--epochs", "1", "--out", tmp_path / "run"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"aezoo: error: worker 0 could not reach worker 1 at 127.0.0.1:{missing} within 3 s"), result.stderr[-3000:]
    assert time.time() - started < 200


@pytest.mark.parametrize(
    "config, message",
    [
        ("not json", "TF_CONFIG must be JSON like"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG must be JSON like"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG must be JSON like"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "index < number of workers"),
    ],
)
def test_a_malformed_tf_config_is_one_line_with_exit_2(tmp_path, monkeypatch, capsys, config, message):
    monkeypatch.setenv("TF_CONFIG", config)
    assert main([*TRAIN, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("aezoo: error: ") and message in error and "\n" not in error


def test_a_batch_that_does_not_divide_among_the_workers_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", tf_config(["127.0.0.1:1", "127.0.0.1:2"], 0))
    assert main([*TRAIN, "--epochs", "1", "--batch-size", "33", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "aezoo: error: batch size 33 does not divide among 2 workers; choose a multiple of 2"
