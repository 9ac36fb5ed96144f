"""The reduce recipe end to end on the embedded MNIST subset (--quick)."""

import pytest

from recipes.run import run_recipe


@pytest.fixture(scope="module")
def reduce_run(tmp_path_factory):
    return run_recipe("reduce", quick=True, out=tmp_path_factory.mktemp("runs") / "reduce", verbose=0)


def test_autoencoder_reconstructs_better_than_pca_with_the_same_m(reduce_run):
    _, metrics = reduce_run
    mse = metrics["metrics"]["reconstruction MSE (M=16)"]
    assert mse["autoencoder"] < 0.9 * mse["PCA"]  # a clear margin, not a tie


def test_codes_carry_label_information_for_both_methods(reduce_run):
    _, metrics = reduce_run
    for metric in ("linear-probe accuracy", "5-NN accuracy"):
        for method, accuracy in metrics["metrics"][metric].items():
            assert 0.5 < accuracy <= 1.0, (metric, method)  # 10 classes: chance is 0.1


def test_run_folder_holds_model_history_map_and_report(reduce_run):
    run_dir, metrics = reduce_run
    for path in ("model.keras", "model/history.csv", "plots/code_map.png", "report.md", "metrics.json"):
        assert (run_dir / path).exists(), path
    assert metrics["plots"] == ["plots/code_map.png"]
    assert "PCA" in (run_dir / "report.md").read_text()
