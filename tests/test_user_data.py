"""A user's own data the first time: image folders of mixed sizes and colour modes, CSV series."""

import numpy as np
import pytest
from PIL import Image

from recipes.cli import main
from recipes.engine import training
from recipes.engine.run import run_recipe
from recipes.engine.training import TrainSettings
from zoo import create, data
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # recipe runs on image folders


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, mnist):
    """60 MNIST digits as PNGs: most 28x28 grayscale, some stored at 32x32 or 20x20, some as RGB."""
    folder = tmp_path_factory.mktemp("mixed") / "digits_png"
    folder.mkdir()
    for i, image in enumerate(mnist.x_train[:60]):
        png = Image.fromarray((image[..., 0] * 255).round().astype(np.uint8))
        png = {0: png.resize((32, 32)), 1: png.resize((20, 20)), 2: png.convert("RGB")}.get(i % 5, png)
        png.save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("stream", [False, True])
def test_images_resized_to_another_size_stay_in_the_unit_range(mixed_folder, stream):
    loaded = data.load(str(mixed_folder), image_size=[28, 28], color_mode="grayscale", stream=stream).in_memory()
    assert loaded.input_shape == (28, 28, 1)
    images = np.concatenate([loaded.x_train, loaded.x_test])
    assert images.min() == 0.0 and images.max() == 1.0  # white digit strokes reach 1 exactly, not a rounding above


def unit_settings(tmp_path):
    options = {"epochs": 1, "batch_size": 32, "patience": 0, "verbose": 0, "validation_fraction": 0}
    return dict(settings=TrainSettings(**options), run_dir=tmp_path, run_name="range")


def build_sigmoid():
    return create("dense_ae", (8, 8, 1), 4, hidden_units=[16])


def test_the_range_check_accepts_rounding_and_prints_the_value_it_refuses(digits, tmp_path):
    x = digits.x_train[:64].copy()
    x[0, 0, 0, 0] = np.float32(1.0000002)  # a rounding error above 1, as resizing or rescaling leaves
    _, history = training.train(build_sigmoid, x, **unit_settings(tmp_path / "rounded"))
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    x[0, 0, 0, 0] = 1.0001
    with pytest.raises(ZooError, match=r"lies in \[0.0, 1.0001\] but the model's sigmoid output"):
        training.train(build_sigmoid, x, **unit_settings(tmp_path / "over"))


RESIZED = ["data.image_size=[28,28]", "data.color_mode=grayscale"]


@pytest.mark.parametrize("stream", [False, True], ids=["in memory", "streamed"])
@pytest.mark.parametrize("recipe, options", [
    ("finetune", {"from_preset": "conv_ae_fashion_mnist", "sets": ["train.learning_rate=3e-4"]}),
    ("reduce", {"sets": [*RESIZED, "params.tutorial_baseline=false"]}),
    ("denoise", {"sets": [*RESIZED, "params.tutorial_baseline=false", "model.filters=[4,8]"]}),
])
def test_a_folder_of_mixed_sizes_and_colour_modes_trains(mixed_folder, tmp_path, recipe, options, stream):
    sets = [*options.get("sets", []), f"data.stream={str(stream).lower()}"]
    _, metrics = run_recipe(recipe, data=str(mixed_folder), quick=True, epochs=1, verbose=0, out=tmp_path / recipe,
                            **{**options, "sets": sets})
    assert metrics["train_examples"] + metrics["test_examples"] == 60
    scores = [v for values in metrics["metrics"].values() for v in values.values() if v is not None]
    assert scores and np.isfinite(scores).all()


def write_series(path, cells):
    """A CSV of a noisy sine wave: an index column t, then `value` (a cell replaced where `cells` says)."""
    values = np.sin(np.arange(301) / 8) + np.random.default_rng(0).normal(0, 0.1, 301)
    rows = [f"{i},{cells.get(i, f'{v:.3f}')},{v * 2:.3f}" for i, v in enumerate(values)]
    path.write_text("\n".join(["t,value,doubled", *rows]))
    return path


def test_a_text_cell_in_a_numeric_csv_column_names_its_line_and_column(tmp_path, capsys):
    series = write_series(tmp_path / "oops.csv", {300: "oops"})  # the last row: line 302
    with pytest.raises(ZooError, match=r"oops.csv line 302, column 'value': 'oops' is not a number") as error:
        data.load(str(series))
    assert "\n" not in str(error.value)
    assert main(["run", "anomaly", "--quick", "--data", str(series), "--out", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("aezoo: error: ") and "line 302, column 'value'" in message
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_report_lists_the_csv_columns_the_run_used(tmp_path):
    series = write_series(tmp_path / "sine.csv", {})
    assert data.load(str(series)).info["columns"] == ["value", "doubled"]  # t indexes time
    run_dir, metrics = run_recipe("anomaly", data=str(series), quick=True, epochs=1, verbose=0, out=tmp_path / "run")
    assert metrics["columns"] == ["value", "doubled"] and metrics["train_examples"] > 0
