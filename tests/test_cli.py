"""The command line: user errors are one line on stderr with exit code 2, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args,expected", [
    (["train", "resnet_ae"], "unknown model 'resnet_ae'"),
    (["train", "conv_ae", "--data", "digits", "--latent-dim", 64], "must be smaller than the input size 64"),
    (["train", "conv_ae", "--data", "no_such_data_set"], "unknown data set"),
    (["train", "conv_ae", "--data", "digits", "--set", "filterz=[8]"], "has no option 'filterz'"),
    (["run", "no_such_recipe"], "unknown recipe 'no_such_recipe'"),
    (["run", "denoise", "--set", "train.epochz=1"], "unknown train key 'epochz'"),
    (["run", "denoise", "--set", "params.sigma=loud"], "params.sigma must be float"),
    (["run", "denoise", "--set", "optimizer.lr=1"], "unknown config section 'optimizer'"),
    (["run", "denoise", "--set", "epochs"], "--set takes SECTION.KEY=VALUE"),
    (["run", "denoise", "--model", "resnet_ae"], "unknown model 'resnet_ae'"),
    (["run", "finetune"], "starts from a preset"),
    (["presets", "--build", "no_such_preset"], "unknown preset"),
    (["export", "missing.keras", "--out", "x"], "does not exist"),
])
def test_user_errors_are_one_line_with_exit_code_2(capsys, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aezoo: error: ") and expected in lines[0], err


def test_a_model_that_does_not_fit_the_data_shape(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "denoise", "--model", "lstm_ae", "--data", "digits", "--quick",
                           "--set", "model.units=[4]", "--set", "model.latent_dim=64", "--out", tmp_path / "r")
    assert code == 2 and "latent_dim=64 must be smaller" in err


def test_resuming_a_folder_of_another_recipe_is_refused(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"recipe": "inpaint", "config": {}}))
    code, _, err = run_cli(capsys, "run", "denoise", "--resume", "--out", tmp_path / "run")
    assert code == 2 and "holds a 'inpaint' run, not 'denoise'" in err


def test_an_existing_run_folder_is_never_overwritten(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_text("an earlier result")
    code, _, err = run_cli(capsys, "run", "denoise", "--out", tmp_path / "run")
    assert code == 2 and "already holds a run" in err
    assert (tmp_path / "run" / "model.keras").read_text() == "an earlier result"


def test_the_installed_entry_point_lists_models_and_prints_no_traceback_on_errors(tmp_path):
    listing = subprocess.run([sys.executable, "-m", "recipes.cli", "list"], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 0
    for name in ("dense_ae", "conv_ae", "lstm_ae", "transformer_ae", "vae"):
        assert name in listing.stdout
    bad = subprocess.run([sys.executable, "-m", "recipes.cli", "train", "conv_ae", "--data", str(tmp_path / "x.npy")],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("aezoo: error: data path")


def test_run_list_names_every_recipe(capsys):
    code, out, _ = run_cli(capsys, "run", "--list")
    assert code == 0
    names = {line.split()[0] for line in out.strip().splitlines()}
    assert {"denoise", "quickstart", "finetune"} <= names
