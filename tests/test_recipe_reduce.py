"""The reduce recipe end to end on the embedded MNIST subset (--quick)."""

import json

import keras
import numpy as np
import pytest

from recipes.engine.run import run_recipe
from recipes.tasks import reduce, tutorials
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # recipe runs


@pytest.fixture(scope="module")
def reduce_run(quick_run):
    return quick_run("reduce")


def test_autoencoder_reconstructs_better_than_pca_with_the_same_m(reduce_run):
    _, metrics = reduce_run
    mse = metrics["metrics"]["reconstruction MSE (M=16)"]
    assert mse["autoencoder"] < 0.9 * mse["PCA"]  # a clear margin, not a tie


def test_the_tutorial_conv_autoencoder_is_trained_beside_ours_and_compared(reduce_run, mnist):
    run_dir, metrics = reduce_run
    mse = metrics["metrics"]["reconstruction MSE (M=16)"]
    keras.utils.set_random_seed(0)
    untrained = tutorials.conv_autoencoder((28, 28, 1), 16)
    untrained_mse = float(np.mean((untrained.predict(mnist.x_test[:500], verbose=0) - mnist.x_test[:500]) ** 2))
    assert 0 < mse["tutorial conv AE"] < 0.5 * untrained_mse  # trained, not left at its random init
    ratio = metrics["metrics"]["reconstruction MSE, ours / tutorial conv AE"]["autoencoder"]
    assert ratio == pytest.approx(mse["autoencoder"] / mse["tutorial conv AE"])
    assert "tutorial conv AE" in metrics["metrics"]["5-NN accuracy"]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    epochs = len((run_dir / "tutorial" / "history.csv").read_text().splitlines()) - 1
    assert 1 <= epochs <= config["train"]["epochs"]  # the run's epochs, in its own folder


def test_codes_carry_label_information_for_both_methods(reduce_run):
    _, metrics = reduce_run
    for metric in ("linear-probe accuracy", "5-NN accuracy"):
        for method, accuracy in metrics["metrics"][metric].items():
            assert 0.5 < accuracy <= 1.0, (metric, method)  # 10 classes: chance is 0.1


def test_the_inputs_themselves_are_probed_beside_the_codes_but_not_reconstructed(reduce_run):
    run_dir, metrics = reduce_run
    probe = metrics["metrics"]["linear-probe accuracy"]
    # PCA's codes are a linear map of the inputs: a probe on all 784 pixels reads at least as much
    assert probe[reduce.INPUT] >= probe["PCA"] - 0.01
    assert reduce.INPUT in metrics["metrics"]["5-NN accuracy"]
    assert reduce.INPUT not in metrics["metrics"]["reconstruction MSE (M=16)"]
    assert "784 input values" in (run_dir / "report.md").read_text()


def test_run_folder_holds_model_history_map_and_report(reduce_run):
    run_dir, metrics = reduce_run
    for path in ("model.keras", "model/history.csv", "plots/code_map.png", "report.md", "metrics.json"):
        assert (run_dir / path).exists(), path
    assert metrics["plots"] == ["plots/code_map.png"]
    assert "PCA" in (run_dir / "report.md").read_text()


def test_the_code_map_has_a_legend_of_class_names(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(reduce, "save_figure", lambda fig, run_dir, name: figures.append(fig))
    codes = np.random.default_rng(0).normal(size=(30, 4))
    labels = np.repeat([0, 2], 15)  # a folder of two classes, the second named "dogs"
    reduce.code_map(tmp_path, {"autoencoder": codes, "PCA": codes[:, :2]}, labels, ["cats", "birds", "dogs"])
    (legend,) = figures[0].legends
    assert [text.get_text() for text in legend.get_texts()] == ["cats", "dogs"]
    assert not [ax for ax in figures[0].axes if ax.get_label() == "<colorbar>"]


def test_inputs_above_the_probed_size_get_a_note_instead_of_a_column(tmp_path, monkeypatch):
    monkeypatch.setattr(reduce, "INPUT_FEATURES_LIMIT", 63)  # digits have 64 values
    run_dir, metrics = run_recipe("reduce", data="digits", model="dense_ae", epochs=1, out=tmp_path / "r", verbose=0,
                                  sets=["params.tutorial_baseline=false"])
    assert reduce.INPUT not in metrics["metrics"]["linear-probe accuracy"]
    assert "no input column: 64 input values, over the 63 probed" in (run_dir / "report.md").read_text()


VARIANTS = ('[{ sparsity = "l1", sparsity_weight = 0.001 }, { sparsity = "kl", sparsity_weight = 0.1 }, '
            '{ contractive_weight = 0.01 }]')


@pytest.fixture(scope="module")
def variants_run(tmp_path_factory):
    # The dense autoencoder: the variants' machinery is the recipe's, whatever the family.
    return run_recipe("reduce", quick=True, model="dense_ae", out=tmp_path_factory.mktemp("runs") / "variants",
                      verbose=0, sets=[f"params.variants={VARIANTS}", "params.tutorial_baseline=false"])


def test_sparse_and_contractive_variants_are_trained_and_judged_beside_the_plain_autoencoder(variants_run, mnist):
    run_dir, metrics = variants_run
    variants = json.loads((run_dir / "config.json").read_text())["config"]["params"]["variants"]
    names = [reduce.variant_name(options) for options in variants]
    assert {"sparsity=l1", "sparsity=kl", "contractive_weight=0.01"} <= {name.split(", ")[1] for name in names}
    mse = metrics["metrics"]["reconstruction MSE (M=16)"]
    plain = keras.models.load_model(run_dir / "model.keras")
    keras.utils.set_random_seed(0)
    untrained = type(plain).from_config(plain.get_config())  # the same network at its initial weights
    x = mnist.x_test[:500]
    untrained_mse = float(np.mean((untrained.predict(x, verbose=0) - x) ** 2))
    for name in names:
        assert 0 < mse[name] < 0.5 * untrained_mse  # trained, on the same budget as the plain autoencoder
        assert mse[name] != mse["autoencoder"]  # the penalty changed the training
        for metric in ("linear-probe accuracy", "5-NN accuracy"):
            assert 0.5 < metrics["metrics"][metric][name] <= 1.0, (metric, name)  # 10 classes: chance is 0.1
    folders = {path.parent.name for path in run_dir.glob("*/history.csv")}
    assert {"sparsity-l1-sparsity_weight-0.001", "contractive_weight-0.01"} <= folders


@pytest.mark.parametrize("variants, problem", [("[1]", "params.variants must be a list of inline tables"),
                                               ('[{sparsity="l2"}]', "sparsity")])
def test_bad_variants_are_refused_before_anything_trains(tmp_path, variants, problem):
    with pytest.raises(ZooError, match=problem):
        run_recipe("reduce", data="digits", model="dense_ae", epochs=1, out=tmp_path / "r", verbose=0,
                   sets=[f"params.variants={variants}"])
    assert not (tmp_path / "r" / "model").exists()
