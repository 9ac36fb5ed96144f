"""Every recipe runs with --quick on every embedded data set it applies to, its widths fitted to the input size."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from recipes.engine.run import fit_widths, run_recipe
from zoo import data
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # a recipe run per recipe and data set

FASHION_MNIST_FILES = [Path(folder, "train-images-idx3-ubyte.gz") for folder in
                       filter(None, [os.environ.get(data.FASHION_MNIST_ENV), data.FASHION_MNIST_DEBIAN_DIR])]
needs_fashion_mnist = pytest.mark.skipif(
    not any(path.exists() for path in FASHION_MNIST_FILES),
    reason=f"Fashion-MNIST is not installed in {data.FASHION_MNIST_DEBIAN_DIR} (apt-get install dataset-fashion-mnist)",
)
# Tiny runs: 200 training and 100 test examples, one epoch, and each task's own counts cut down.
TINY = ["quick.train_examples=200", "quick.test_examples=100"]
TASK_SETS = {
    "generate": ["params.importance_samples=2", "params.classifier_epochs=1", "params.quality_samples=50",
                 "params.compare={}"],
    "classify": ["params.label_fractions=[0.1, 1.0]", "params.label_draws=1", "params.min_pass_examples=64",
                 "params.classifier_epochs=1"],
}
FITTED_ON_DIGITS = {"reduce", "quickstart", "inpaint", "generate", "classify"}  # denoise's conv_ae picks its own
RUNS = [
    *[run for recipe in ("reduce", "denoise", "quickstart", "inpaint", "generate", "classify") for run in (
        (recipe, "mnist5k"), (recipe, "digits"), pytest.param(recipe, "fashion_mnist", marks=needs_fashion_mnist))],
    ("finetune", "mnist5k"), pytest.param("finetune", "fashion_mnist", marks=needs_fashion_mnist),  # the presets take 28x28
    ("anomaly", "co2"),
]


@pytest.mark.parametrize("recipe, data_name", RUNS)
def test_every_recipe_runs_quick_on_every_embedded_data_set(recipe, data_name, tmp_path):
    preset = {"from_preset": "conv_ae_fashion_mnist"} if recipe == "finetune" else {}
    run_dir, metrics = run_recipe(recipe, data=data_name, quick=True, epochs=1, verbose=0, out=tmp_path / "run",
                            sets=[*TINY, *TASK_SETS.get(recipe, [])], **preset)
    assert metrics["data"] == data_name and metrics["train_examples"] > 0
    scores = [v for values in metrics["metrics"].values() for v in values.values() if v is not None]
    assert scores and np.isfinite(scores).all()
    fitted = metrics.get("fitted_widths", {})  # only the 8x8 digits need other widths than the recipe's
    assert bool(fitted) == (data_name == "digits" and recipe in FITTED_ON_DIGITS)
    latent_dim = json.loads((run_dir / "config.json").read_text())["config"]["model"]["latent_dim"]
    for option, widths in fitted.items():
        assert all(latent_dim < w < 64 for w in np.atleast_1d(widths["used"])), option
    if recipe == "anomaly":
        assert metrics["columns"] == ["co2"]


def test_widths_that_fit_stay_and_others_spread_between_code_and_input():
    assert fit_widths(128, 784, 16) == 128 and fit_widths([400], 784, 16) == [400]
    assert fit_widths(128, 64, 16) == 32 and fit_widths([400, 200], 64, 16) == [40, 25]


def test_a_width_the_user_sets_is_kept_and_checked(tmp_path):
    with pytest.raises(ZooError, match=r"hidden_units=\[128\] must lie strictly between latent_dim=16 and the input size 64"):
        run_recipe("reduce", data="digits", quick=True, epochs=1, verbose=0, out=tmp_path / "run",
                   sets=[*TINY, "model.hidden_units=128"])
