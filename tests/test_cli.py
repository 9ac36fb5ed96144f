"""The command line: user errors are one line on stderr with exit code 2, never a traceback."""

import json
import os
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
    (["train", "conv_ae", "--data", "digits", "--set", "train.optimiser=adamw"], "unknown train key 'optimiser'"),
    (["train", "conv_ae", "--data", "digits", "--set", "train.epochs=3"], "train.epochs has its own option here: use --epochs 3"),
    (["train", "conv_ae", "--set", "data.name=digits"], "data.name has its own option here: use --data digits"),
    (["run", "no_such_recipe"], "unknown recipe 'no_such_recipe'"),
    (["run", "denoise", "--set", "train.epochz=1"], "unknown train key 'epochz'"),
    (["run", "denoise", "--set", "params.sigma=loud"], "params.sigma must be float"),
    (["run", "denoise", "--set", "optimizer.lr=1"], "unknown config section 'optimizer'"),
    (["run", "classify", "--set", "params.augment_shift=28"], "params.augment_shift must be 0 to 27 pixels for 28x28 inputs, got 28"),
    (["run", "classify", "--set", "params.pretraining=mae"], "unknown params.pretraining 'mae'; choose one of: inpaint, masked, reconstruct"),
    (["run", "denoise", "--set", "epochs"], "--set takes SECTION.KEY=VALUE"),
    (["run", "denoise", "--set", "quick.epochs=3"], "--set quick.epochs applies to --quick runs only; add --quick"),
    (["run", "denoise", "--set", "params.extra_sigmas=[0.3, -0.1]"], "params.extra_sigmas must be >= 0, got [0.3, -0.1]"),
    (["run", "anomaly", "--set", "params.threshold_percentile=150"], "params.threshold_percentile must be in [0, 100], got 150.0"),
    (["run", "inpaint", "--set", "params.min_fraction=0.6", "--set", "params.max_fraction=0.3"],
     "params.min_fraction <= params.max_fraction must hold (both in (0, 1]), got 0.6 and 0.3"),
    (["run", "reduce", "--set", "data.colour=rgb"], "unknown data key 'colour'; choose one of: color_mode, data_dir, image_key, image_size,"),
    (["run", "reduce", "--set", "data.stream=yes"], "data.stream must be bool, got 'yes'"),
    (["run", "reduce", "--data", "digits", "--set", "data.image_size=[4,4]"], "data.image_size applies to image folders, TFRecord files and TensorFlow Datasets, not digits"),
    (["run", "denoise", "--model", "resnet_ae"], "unknown model 'resnet_ae'"),
    (["run", "classify", "--labels", "one%"], "argument --labels: expected shares of the labels such as 1%,10%,100% or 0.01,0.1,1, got 'one%'"),
    (["run", "reduce", "--labels", "1%"], "--labels applies to the classify recipe, not reduce; remove it"),
    (["run", "finetune"], "starts from a preset"),
    (["presets", "--build", "no_such_preset"], "unknown preset"),
    (["export", "missing.keras", "--out", "x"], "does not exist"),
    (["run", "reduce", "--quick", "--epochs", 0], "argument --epochs: must be >= 1, got 0"),
    (["run", "reduce", "--epochs", -3], "argument --epochs: must be >= 1, got -3"),
    (["train", "dense_ae", "--batch-size", 0], "argument --batch-size: must be >= 1, got 0"),
    (["train", "dense_ae", "--latent-dim", "two"], "argument --latent-dim: expected a whole number >= 1, got 'two'"),
    (["finetune", "dense_ae_fashion_mnist", "--data", "digits", "--epochs", 0], "argument --epochs: must be >= 1"),
    (["finetune", "dense_ae_fashion_mnist", "--data", "digits", "--set", "train.batch_size=8"],
     "train.batch_size has its own option here: use --batch-size 8"),
    (["finetune", "dense_ae_fashion_mnist", "--data", "digits", "--set", "model.latent_dim=3"],
     "model.latent_dim: preset dense_ae_fashion_mnist brings its own model and options; to train another model use aezoo train"),
    (["finetune", "dense_ae_fashion_mnist", "--data", "digits"],
     "preset dense_ae_fashion_mnist takes inputs of shape (28, 28, 1), digits has (8, 8, 1); give it examples of shape (28, 28, 1)"),
    (["run", "classify", "--from-preset", "conv_ae_fashion_mnist", "--set", "model.filters=[8]"],
     "--set model.filters does not apply with --from-preset: preset conv_ae_fashion_mnist brings its own model (conv_ae)"),
    (["run", "classify", "--from-preset", "conv_ae_fashion_mnist", "--model", "dense_ae"], "--model dense_ae does not apply with --from-preset"),
    (["export", "missing.keras", "--out", "x", "--batch-size", 0], "argument --batch-size: must be >= 1, got 0"),
    (["verify", "x", "--timing-runs", -3], "argument --timing-runs: must be >= 0, got -3"),
    (["verify", "x", "--platform", "x86_64", "--cpu", "cortex-a76"], "--cpu applies to --platform aarch64 only (x86_64 runs natively)"),
    (["run", "denoise", "--seed", -1], "argument --seed: must be >= 0, got -1"),
    (["run", "denoise", "--set", "train.seed=-1"], "train.seed must be >= 0, got -1"),
    (["no_such_command"], "invalid choice: 'no_such_command'"),
    # a negative count is refused before anything runs, whichever section holds it
    (["run", "reduce", "--quick", "--set", "quick.train_examples=-5"], "quick.train_examples must be >= 1, got -5"),
    (["run", "reduce", "--quick", "--set", "quick.test_examples=0"], "quick.test_examples must be >= 1, got 0"),
    (["run", "reduce", "--set", "params.neighbours=-1"], "params.neighbours must be >= 1, got -1"),
    (["run", "reduce", "--quick", "--data", "digits", "--set", "model.latent_dim=-5"], "latent_dim must be a positive int, got -5"),
    (["run", "anomaly", "--set", "data.window=-1"], "data.window must be >= 1, got -1"),
    (["run", "anomaly", "--set", "data.stride=0"], "data.stride must be >= 1, got 0"),
    (["train", "conv_ae", "--set", "data.image_size=[-28,28]"], "data.image_size must be >= 1, got [-28, 28]"),
    (["run", "reduce", "--set", "train.patience=-1"], "train.patience must be >= 0, got -1"),
    (["run", "reduce", "--quick", "--set", "train.epochs=-1"], "train.epochs must be >= 1, got -1"),  # --quick's epochs would hide it
    (["train", "dense_ae", "--set", "train.verbose=-1"], "train.verbose must be 0, 1 or 2, got -1"),
    # options by their whole names only: argparse would read --epoch as --epochs
    (["run", "reduce", "--quick", "--data", "digits", "--epoch", 1], "unrecognized arguments: --epoch 1"),
    (["train", "dense_ae", "--data", "digits", "--epoch", 1], "unrecognized arguments: --epoch 1"),
    (["train", "dense_ae", "--data", "digits", "--set", "model.latent_dim=3"], "model.latent_dim has its own option here: use --latent-dim 3"),
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
    (tmp_path / "run" / "model" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"recipe": "inpaint", "config": {}}))
    (tmp_path / "run" / "model" / "checkpoints" / "state.json").write_text(json.dumps({"run": "inpaint/model", "epoch": 1}))
    code, _, err = run_cli(capsys, "run", "denoise", "--resume", "--out", tmp_path / "run")
    assert code == 2 and "holds a 'inpaint' run, not 'denoise'" in err


def test_an_existing_run_folder_is_never_overwritten(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_text("an earlier result")
    code, _, err = run_cli(capsys, "run", "denoise", "--out", tmp_path / "run")
    assert code == 2 and "already holds a run" in err
    assert (tmp_path / "run" / "model.keras").read_text() == "an earlier result"


def aezoo_process(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "AEZOO_VERBOSE")}
    return subprocess.run([sys.executable, "-m", "recipes.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**environment, **env})


@pytest.mark.slow  # starts aezoo processes (each imports TensorFlow)
def test_the_installed_entry_point_lists_models_and_prints_no_traceback_on_errors(tmp_path):
    listing = aezoo_process("list")
    assert listing.returncode == 0
    for name in ("dense_ae", "conv_ae", "lstm_ae", "transformer_ae", "vae"):
        assert name in listing.stdout
    bad = aezoo_process("train", "conv_ae", "--data", tmp_path / "x.npy")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("aezoo: error: data path")


@pytest.mark.slow  # starts aezoo processes (each imports TensorFlow)
def test_tensorflow_start_up_logging_is_off_unless_asked_for(tmp_path):
    # What TensorFlow alone writes to stderr on import in this environment (none on some machines).
    tf_lines = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                              env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}).stderr.splitlines()
    for verbose in ({}, {"AEZOO_VERBOSE": "1"}):
        bad = aezoo_process("train", "conv_ae", "--data", tmp_path / "x.npy", **verbose)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and lines[-1].startswith("aezoo: error: data path")
        assert len(lines) == (1 + len(tf_lines) if verbose else 1), bad.stderr


def test_listing_recipes_and_presets_does_not_import_tensorflow():
    script = ("import sys; from recipes.cli import main; "
              "assert main(['presets']) == 0 and main(['run', '--list']) == 0 and main(['--help']) == 0; "
              "print(sorted(m for m in ('tensorflow', 'keras', 'zoo') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "conv_ae_fashion_mnist" in result.stdout and "quickstart" in result.stdout


@pytest.mark.slow  # runs a recipe
def test_a_run_that_never_completed_an_epoch_does_not_block_its_folder(capsys, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (8, 8)).save(images / "a.png")
    Image.new("L", (9, 8)).save(images / "b.png")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "reduce", "--quick", "--data", images, "--out", out)
    assert code == 2 and "give images of one size" in err
    assert [p.name for p in out.iterdir()] == ["config.json"]
    # --resume too: there is nothing to resume, and the new --data must be the one used
    code, _, err = run_cli(capsys, "run", "reduce", "--quick", "--epochs", 1, "--data", "digits", "--set", "model.hidden_units=32",
                           "--out", out, "--resume")
    assert code == 0, err
    assert f"aezoo: {out} holds a run that never completed an epoch; starting afresh" in err.splitlines()
    assert json.loads((out / "metrics.json").read_text())["data"] == "digits"


@pytest.mark.slow  # runs a recipe
def test_resuming_with_other_settings_fails_in_one_line_and_keeps_the_run(capsys, tmp_path):
    out = tmp_path / "run"
    run = ["run", "reduce", "--quick", "--data", "digits", "--set", "model.hidden_units=32", "--out", out]
    code, _, err = run_cli(capsys, *run, "--epochs", 1)
    assert code == 0, err
    finished = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, _, err = run_cli(capsys, *run, "--epochs", 2, "--set", "params.neighbours=3", "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other settings (params.neighbours: 5 -> 3, train.epochs: 1 -> 2)" in err and str(out / "config.json") in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == finished


def test_train_resuming_another_model_fails_in_one_line(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "dense_ae", "--data", "digits", "--epochs", 1, "--out", out)
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "dense_ae", "--data", "digits", "--epochs", 2, "--latent-dim", 8, "--out", out,
                           "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds another model (" in err and "latent_dim: 16 -> 8" in err
    # more epochs of the same model is what --resume is for
    code, _, err = run_cli(capsys, "train", "dense_ae", "--data", "digits", "--epochs", 2, "--out", out, "--resume")
    assert code == 0, err
    assert f"aezoo: resuming from {out / 'checkpoints' / 'epoch-0001.keras'} (epoch 1 of 2 done)" in err.splitlines()
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_train_resuming_with_other_training_settings_fails_in_one_line_and_keeps_the_run(capsys, tmp_path):
    out = tmp_path / "run"
    first = ["train", "dense_ae", "--data", "digits", "--epochs", 1, "--out", out, "--set", "train.lr_schedule=cosine"]
    code, _, err = run_cli(capsys, *first)
    assert code == 0, err
    finished = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for change, expected in (
        (["--set", "train.optimizer=adamw"], "other settings (train.optimizer: adam -> adamw); resume with the settings"),
        # the schedule decayed to 0 at epoch 1: a second epoch would train at learning rate 0
        (["--epochs", 2], "other settings (train.epochs: 1 -> 2) (a cosine schedule ends at the run's last epoch"),
    ):
        code, _, err = run_cli(capsys, *first, *change, "--resume")
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == finished


def test_train_takes_training_keys_in_set(capsys, tmp_path):
    import keras

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "dense_ae", "--data", "digits", "--epochs", 1, "--out", out,
                           "--set", "train.optimizer=adamw", "--set", "train.weight_decay=0.5")
    assert code == 0, err
    optimizer = keras.saving.load_model(out / "checkpoints" / "epoch-0001.keras").optimizer
    assert type(optimizer).__name__ == "AdamW" and optimizer.weight_decay == 0.5


def test_train_takes_model_options_bare_or_prefixed_as_run_does(capsys, tmp_path):
    import keras

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "conv_ae", "--data", "digits", "--epochs", 1, "--latent-dim", 4, "--out", out,
                           "--set", "model.filters=[4]", "--set", "hidden_units=16", "--set", "train.verbose=0")
    assert code == 0, err
    config = keras.saving.load_model(out / "model.keras").get_config()
    assert (config["filters"], config["hidden_units"]) == ([4], 16)


def test_export_of_a_file_that_is_no_model_says_what_it_takes(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    code, _, err = run_cli(capsys, "export", tmp_path / "notes.txt", "--out", tmp_path / "x")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "notes.txt is not a .keras file" in lines[0] and "or a preset name" in lines[0] and "unknown preset" not in lines[0]
    assert not (tmp_path / "x").exists()


def test_run_list_names_every_recipe(capsys):
    code, out, _ = run_cli(capsys, "run", "--list")
    assert code == 0
    names = {line.split()[0] for line in out.strip().splitlines()}
    assert {"denoise", "quickstart", "finetune"} <= names


def test_finetune_reads_a_folder_at_the_presets_input_and_takes_training_keys(capsys, tmp_path, digits):
    from PIL import Image

    # 12x10 RGB images: the preset takes 28x28 grayscale
    for i, (image, label) in enumerate(zip(digits.x_train[:40], digits.y_train[:40])):
        (tmp_path / "images" / str(label)).mkdir(parents=True, exist_ok=True)
        grey = (image[..., 0] * 255).round().astype("uint8")
        Image.fromarray(grey).convert("RGB").resize((12, 10)).save(tmp_path / "images" / str(label) / f"{i}.png")
    out = tmp_path / "ft"
    code, _, err = run_cli(capsys, "finetune", "dense_ae_fashion_mnist", "--data", tmp_path / "images", "--quick", "--epochs", 1,
                           "--set", "train.learning_rate=3e-4", "--set", "train.seed=3", "--out", out)
    assert code == 0, err
    assert "images read as the preset takes them: data.image_size=[28, 28], data.color_mode=grayscale" in (out / "report.md").read_text()
    settings = json.loads((out / "finetune" / "checkpoints" / "state.json").read_text())["settings"]
    # --seed was left out, so train.seed holds (the flag's default used to override it unseen)
    assert (settings["learning_rate"], settings["seed"], settings["epochs"]) == (3e-4, 3, 1)



def test_classify_refuses_a_folder_of_one_class(capsys, tmp_path):
    from PIL import Image

    (tmp_path / "images" / "shirts").mkdir(parents=True)
    for i in range(5):
        Image.new("L", (8, 8), color=40 * i).save(tmp_path / "images" / "shirts" / f"{i}.png")
    code, _, err = run_cli(capsys, "run", "classify", "--data", tmp_path / "images", "--out", tmp_path / "run")
    assert code == 2 and "needs at least two classes, and the training split of images has one" in err


def test_every_numeric_recipe_param_has_bounds_checked_before_training():
    from recipes.engine.catalog import list_recipes
    from recipes.engine.config import PARAM_BOUNDS, load_recipe

    # reduce's variants and generate's compare are tables of model options, checked by their tasks before training.
    structured = {"variants", "compare"}
    numeric = {key for recipe in list_recipes() for key, value in load_recipe(recipe).get("params", {}).items()
               if not isinstance(value, (bool, str)) and key not in structured}
    assert numeric and numeric <= set(PARAM_BOUNDS), numeric - set(PARAM_BOUNDS)


def test_labels_take_percentages_or_shares():
    from recipes.cli.main import _parser

    assert _parser().parse_args(["run", "classify", "--labels", "1%, 10%,100%"]).labels == [0.01, 0.1, 1.0]
    assert _parser().parse_args(["run", "classify", "--labels", "0.05"]).labels == [0.05]


@pytest.mark.parametrize("args,expected", [
    (["benchmark", "data", "--sizes", "10000,abc"], "argument --sizes: expected a whole number >= 1, got 'abc'"),
    (["benchmark", "export", "--seed", -2], "argument --seed: must be >= 0, got -2"),
    (["benchmark", "recipes", "loop", "--epochs", 0], "argument --epochs: must be >= 1, got 0"),
    (["benchmark", "recipes", "loop", "--epoch", 0], "unrecognized arguments: --epoch 0"),
])
def test_benchmark_command_lines_fail_in_one_line_like_the_others(capsys, args, expected):
    with pytest.raises(SystemExit) as stop:  # the benchmark's own parser exits, as argparse does
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("aezoo: error: ") and expected in err[0], err
