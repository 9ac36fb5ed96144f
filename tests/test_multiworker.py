"""--strategy multi_worker: a cluster whose peer never starts, a malformed TF_CONFIG and a batch
that does not divide among the workers each fail in one line. (Two workers training in step is
open: Keras 3.15's fit stops in its first step with two workers; see the README.)"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes import training
from recipes.cli import main

pytestmark = pytest.mark.multiworker

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


def test_a_worker_whose_peer_never_starts_fails_in_one_line(tmp_path):
    own, missing = free_ports(2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", training.WORKER_TIMEOUT_ENV: "3",
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
