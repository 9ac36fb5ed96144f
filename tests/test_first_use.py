"""A user's own files and folders the first time: `aezoo predict` reads images as training does,
file-system failures are one line that says truly what was kept, and nothing prints that the zoo
did not write itself."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_helpers import train_briefly
from PIL import Image

import zoo
from export import export_model, runtime
from export.edge import interpreter
from export.builder.exporter import tflite_name
from export.builder.onnx_target import onnx_name
from recipes import cli
from recipes.engine import checkpoints
from zoo.image_files import scan_folder

pytestmark = pytest.mark.slow  # recipe, export and predict runs in subprocesses

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `aezoo ARGV` run in this process."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def aezoo_process(*args, script=None):
    """`aezoo ARGS` (or `python -c SCRIPT`) in a fresh process, with no log settings of the user."""
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "AEZOO_VERBOSE")}
    command = ["-c", script] if script else ["-m", "recipes.cli", *map(str, args)]
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=REPO,
                          env={**environment, "PYTHONPATH": str(REPO)}, timeout=600)


def assert_only_zoo_lines(stderr):
    """Every stderr line is one the zoo wrote ("aezoo: ..."): no library's log line reached the user."""
    assert all(line.startswith("aezoo:") for line in stderr.splitlines()), stderr


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory):
    """A conv autoencoder of 8x8 grayscale digits, saved as .keras and exported (float32, int8, ONNX)."""
    digits = zoo.data.load("digits")
    model = train_briefly("conv_ae", digits)
    root = tmp_path_factory.mktemp("digits_export")
    model.save(root / "model.keras")
    export_model(model, root / "export", quantize=("float32", "int8"), calibration_data=digits,
                 calibration_samples=100, verify_samples=32, onnx=True)
    return root, digits


# --- predict reads images as training does ---------------------------------------------------------
def test_predict_takes_a_folder_of_other_sized_colour_images_as_training_reads_them(digits_export, tmp_path, capsys):
    root, digits = digits_export
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    (images / "dogs").mkdir()
    for i, name in enumerate(["cats/a.png", "cats/b.jpg", "dogs/c.png"]):
        gray = np.round(digits.x_test[i, ..., 0] * 255).astype("uint8")
        rgb = np.stack([gray, gray // 2, 255 - gray], axis=-1)  # colour, so conversion matters
        Image.fromarray(rgb).resize((20, 20), Image.NEAREST).save(images / name, quality=95)
    model_file = root / "export" / tflite_name("float32")
    code, out, err = run_cli(capsys, "predict", model_file, images, "-o", tmp_path / "out")
    assert code == 0, err
    assert "resized 3 image(s) from 20x20 to 8x8" in out and "converted 3 image(s) to grayscale" in out
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["cats/a.png", "cats/b.png", "dogs/c.png"]
    # The reconstructions of the images as a training run reads them (tf.image resize and conversion).
    trained_as, _, _ = scan_folder(images, image_size=[8, 8], color_mode="grayscale")
    expected = runtime.load(model_file).reconstruct(trained_as.numpy())
    got = np.stack([np.asarray(Image.open(tmp_path / "out" / name), "float32") / 255 for name in written])
    np.testing.assert_allclose(got, expected[..., 0], atol=0.03)

    code, out, err = run_cli(capsys, "predict", model_file, images / "cats" / "a.png", "--signature", "encode")
    assert code == 0 and "(1, 8)" in out and "resized 1 image(s) from 20x20 to 8x8" in out


# --- file-system failures: one line, exit 2, what was kept ------------------------------------------
def test_predict_into_a_read_only_folder_is_one_line(digits_export, tmp_path, capsys, monkeypatch):
    root, digits = digits_export
    np.save(tmp_path / "x.npy", digits.x_test[:2])

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(interpreter.tempfile, "mkstemp", read_only)  # write_atomically's temp file
    code, _, err = run_cli(capsys, "predict", root / "export" / tflite_name("float32"), tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Read-only file system" in err
    assert not (tmp_path / "y.npy").exists()


def test_export_under_a_file_or_onto_a_full_disk_is_one_line_and_keeps_the_earlier_export(digits_export, tmp_path, capsys,
                                                                                           monkeypatch):
    root, _ = digits_export
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "export", root / "model.keras", "--quantize", "float32", "--out", tmp_path / "file" / "export")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nothing was written" in err, err

    out = tmp_path / "export"
    assert run_cli(capsys, "export", root / "model.keras", "--quantize", "float32", "--out", out)[0] == 0
    earlier = (out / runtime.METADATA_FILE).read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("export.builder.convert.write_saved_model", disk_full)  # the first file the export writes
    code, _, err = run_cli(capsys, "export", root / "model.keras", "--quantize", "float32", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "the earlier export there is unchanged" in err, err
    assert (out / runtime.METADATA_FILE).read_bytes() == earlier
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


@pytest.mark.parametrize("failing_epoch", [1, 2])
def test_a_full_disk_during_training_says_truly_whether_a_checkpoint_is_kept(tmp_path, capsys, monkeypatch, failing_epoch):
    replace = os.replace

    def disk_full_at_epoch(source, target):
        if Path(target).name == f"epoch-{failing_epoch:04d}.keras":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replace(source, target)

    monkeypatch.setattr(checkpoints.os, "replace", disk_full_at_epoch)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "dense_ae", "--data", "digits", "--epochs", 2, "--set", "hidden_units=[32]", "--latent-dim", 8,
                           "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err
    if failing_epoch == 1:
        assert "no epoch was checkpointed yet" in err and "--resume" not in err
        assert not list((out / "checkpoints").glob("*.keras"))
    else:
        assert "the checkpoint of epoch 1 is intact, continue with --resume" in err
        state = json.loads((out / "checkpoints" / checkpoints.STATE_FILE).read_text())
        assert state["epoch"] == 1 and (out / "checkpoints" / state["checkpoint"]).is_file()


# --- nothing the user did not ask for -------------------------------------------------------------
def test_importing_zoo_and_an_unknown_data_set_print_nothing_but_the_error():
    script = "import zoo\ntry:\n    zoo.data.load('nosuch_set')\nexcept zoo.ZooError:\n    pass"
    result = aezoo_process(script=script)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_export_and_predict_print_only_the_zoos_lines(digits_export, tmp_path):
    root, digits = digits_export
    exported = aezoo_process("export", root / "model.keras", "--out", tmp_path / "export", "--onnx",
                             "--calibration-data", "digits")
    assert exported.returncode == 0, exported.stderr
    assert_only_zoo_lines(exported.stderr)
    assert tflite_name("int8") in json.loads((tmp_path / "export" / runtime.METADATA_FILE).read_text())["files"]
    np.save(tmp_path / "x.npy", digits.x_test[:3])
    for artifact in (tflite_name("int8"), tflite_name("float32"), onnx_name("reconstruct")):
        predicted = aezoo_process("predict", tmp_path / "export" / artifact, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
        assert predicted.returncode == 0 and predicted.stderr == "", predicted.stderr
        assert np.load(tmp_path / "y.npy").shape == (3, 8, 8, 1)


def test_a_quick_reduce_run_prints_only_the_zoos_lines(tmp_path):
    result = aezoo_process("run", "reduce", "--quick", "--epochs", 1, "--data", "digits", "--set", "model.hidden_units=32",
                           "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert_only_zoo_lines(result.stderr)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert all("autoencoder" in row for row in metrics.values())
