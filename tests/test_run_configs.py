"""Run configs as files: `aezoo run FILE.toml`, `--dump-config`, and each preset's train.toml."""

import contextlib
import io
import json
import shlex

import pytest

import zoo
from recipes.cli import main
from recipes.engine import training
from recipes.engine.catalog import tomllib
from recipes.tools.build_presets import TRAIN_CONFIG, train_config

PRESETS = sorted(zoo.list_presets())
# --quick, cut to a few dozen examples and one epoch: enough to build and train each preset's own model
# (128 training examples: the compress recipe refuses more PCA components, 128 at most, than training images).
TINY = ["--quick", "--set", "quick.epochs=1", "--set", "quick.train_examples=128", "--set", "quick.test_examples=32"]


class TrainingStarted(Exception):
    """Raised by the spy after the run's first model trained: the rest of the recipe is not under test."""


def cli(*args):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(list(map(str, args)))
    return status, printed.getvalue()


def same_keys(config, reference, ignore=()):
    """`config` cut to `reference`'s keys, nested dicts too: options a family gained after a preset was
    built keep their defaults and are not in the preset's config."""
    return {key: same_keys(config[key], value) if isinstance(value, dict) else config[key]
            for key, value in reference.items() if key not in ignore}


def without(config, keys):
    return {key: value for key, value in config.items() if key not in keys}


def train_toml(name):
    return zoo.presets.PRESETS_DIR / name / TRAIN_CONFIG


@pytest.mark.parametrize("name", PRESETS)
def test_each_presets_train_toml_is_the_dump_of_its_recorded_command(name):
    command = zoo.presets.preset_info(name)["command"]
    status, dumped = cli(*shlex.split(command)[1:], "--dump-config")
    text = train_toml(name).read_text()
    assert status == 0 and text.endswith(dumped)
    assert tomllib.loads(text) == tomllib.loads(dumped)
    # The maintainers' tool writes the same text; one preset goes through its own process (the others
    # reuse this dump: a process each would import TensorFlow eleven times).
    assert text == train_config(name, dumped=None if name == "dense_ae_co2_micro" else dumped)


# The fast tier starts the co2 preset (small data); the Fashion-MNIST ones load 60,000 images each.
@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name == "dense_ae_co2_micro" else pytest.mark.slow)
                                  for name in PRESETS])
def test_running_a_presets_train_toml_starts_training_that_presets_model(name, tmp_path, monkeypatch):
    started = []

    def stop_at_training(build_model, x, *args, settings, **kwargs):
        started.append((build_model(), settings))
        raise TrainingStarted

    monkeypatch.setattr(training, "train", stop_at_training)
    with pytest.raises(TrainingStarted):
        main(["run", str(train_toml(name)), *TINY, "--out", str(tmp_path / "run")])
    [(model, settings)] = started
    info = zoo.presets.preset_info(name)
    config = model.get_config()
    assert model.registry_name == info["model"]
    # The VAE's noise seed is drawn per model (no option of the command); its other keys must match.
    assert same_keys(config, info["config"], ignore=("name", "dtype", "seed")) == without(info["config"], ("name", "dtype", "seed"))
    expected = tomllib.loads(train_toml(name).read_text())["train"]
    assert (settings.optimizer, settings.learning_rate, settings.batch_size) == (
        expected.get("optimizer", "adam"), expected["learning_rate"], expected["batch_size"])
    assert settings.epochs == 1


def test_a_presets_train_toml_runs_to_the_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(train_toml("dense_ae_co2_micro")), *TINY, "--out", str(out)]) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["config"]["model"]["name"] == "dense_ae" and recorded["config"]["train"]["epochs"] == 1
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics and all("autoencoder" in scores for scores in metrics.values())


def test_a_written_config_runs_as_its_command_and_set_overrides_it(tmp_path):
    args = ["run", "reduce", "--model", "dense_ae", "--set", "model.hidden_units=[64]", "--epochs", "3", "--seed", "4"]
    status, dumped = cli(*args, "--dump-config")
    assert status == 0
    config = tomllib.loads(dumped)
    assert config["model"] == {"name": "dense_ae", "latent_dim": 16, "hidden_units": [64]}
    assert config["train"]["epochs"] == 3 and config["train"]["seed"] == 4
    path = tmp_path / "mine.toml"
    path.write_text(dumped)
    assert cli("run", path, "--dump-config") == (0, dumped)
    status, overridden = cli("run", path, "--set", "train.epochs=7", "--set", "model.latent_dim=8", "--dump-config")
    assert tomllib.loads(overridden)["train"]["epochs"] == 7 and tomllib.loads(overridden)["model"]["latent_dim"] == 8


def test_a_short_config_file_takes_the_rest_from_its_tasks_recipe(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text('task = "denoise"\n[model]\nname = "dense_ae"\n[params]\nsigma = 0.2\n')
    config = tomllib.loads(cli("run", path, "--dump-config")[1])
    denoise = tomllib.loads(cli("run", "denoise", "--dump-config")[1])
    assert config["model"] == {"name": "dense_ae"}
    assert config["params"] == {**denoise["params"], "sigma": 0.2}
    assert config["train"] == denoise["train"] and config["data"] == denoise["data"]


@pytest.mark.parametrize(
    "text, named",
    [
        ('task = "denoise"\n[optimizer]\nname = "adam"\n', ["'optimizer'", "params", "train"]),
        ('task = "denoise"\n[train]\nepoch = 3\n', ["'epoch'", "epochs"]),
        ('task = "denoise"\n[params]\nnoise = 0.1\n', ["'noise'", "sigma"]),
        ('task = "denoize"\n', ["'denoize'", "denoise", "reduce"]),
        ('task = "denoise"\n[train]\nepochs = "many"\n', ["train.epochs must be int"]),
    ],
)
def test_a_config_file_with_an_unknown_section_key_or_task_is_one_line_naming_it(text, named, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["run", str(path), "--dump-config"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(path) in error
    assert all(word in error for word in named), error
