"""The anomaly recipe end to end (--quick): co2 against the z-score baseline, and user CSV series with and without labels."""

import csv

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recipes.engine.run import run_recipe
from zoo.data import TEST_FRACTION, inject_anomalies

pytestmark = pytest.mark.slow  # recipe runs


def read_window_scores(run_dir):
    with open(run_dir / "window_scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_autoencoder_beats_zscore_on_co2(tmp_path):
    run_dir, metrics = run_recipe("anomaly", quick=True, out=tmp_path / "co2", verbose=0)
    values = metrics["metrics"]
    auc = values["ROC-AUC"]
    assert auc["autoencoder"] > 0.5
    assert auc["autoencoder"] > auc["z-score"]
    for metric in ("precision", "recall"):
        assert 0 < values[metric]["autoencoder"] <= 1
    rows = read_window_scores(run_dir)
    assert len(rows) == metrics["test_examples"]
    assert sum(int(r["autoencoder flagged"]) for r in rows) == values["test windows flagged"]["autoencoder"]
    assert "percentile" in " ".join(metrics["notes"])
    for path in ("report.md", "model.keras", "model/history.csv", "plots/flagged_windows.png"):
        assert (run_dir / path).exists(), path


@pytest.fixture(scope="module")
def elnino_with_anomalies():
    """Monthly El Niño sea temperatures 1950-2010 (statsmodels) with 3 anomalies injected into the test part."""
    import statsmodels.api as sm

    frame = sm.datasets.elnino.load_pandas().data
    values = frame.drop(columns="YEAR").to_numpy("float64").ravel()
    months = [f"{year}-{month:02d}" for year in frame["YEAR"].astype(int) for month in range(1, 13)]
    # The CSV loader tests on the last TEST_FRACTION: anomalies there keep the training windows normal.
    start = int(len(values) * (1 - TEST_FRACTION))
    values, labels = inject_anomalies(values, np.random.default_rng(0), 3, start=start)
    return months, values, labels


def write_series_csv(path, months, values, labels=None):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["month", "temperature"] + (["label"] if labels is not None else []))
        for row in zip(months, values, *([labels] if labels is not None else [])):
            writer.writerow(row)
    return path


def test_labelled_csv_series(tmp_path, elnino_with_anomalies):
    months, values, labels = elnino_with_anomalies
    series = write_series_csv(tmp_path / "elnino.csv", months, values, labels)
    run_dir, metrics = run_recipe(
        "anomaly", quick=True, data=str(series), sets=["data.stride=4"], out=tmp_path / "run", verbose=0
    )
    auc = metrics["metrics"]["ROC-AUC"]
    assert auc["autoencoder"] > 0.5
    assert 0 <= auc["z-score"] <= 1
    rows = read_window_scores(run_dir)
    assert {int(r["label"]) for r in rows} == {0, 1}
    assert (run_dir / "plots/flagged_windows.png").exists()


def test_unlabelled_csv_series_gets_flags_without_roc_auc(tmp_path, elnino_with_anomalies):
    months, values, labels = elnino_with_anomalies
    series = write_series_csv(tmp_path / "elnino.csv", months, values)
    run_dir, metrics = run_recipe(
        "anomaly", quick=True, data=str(series), sets=["data.stride=4"], out=tmp_path / "run", verbose=0
    )
    assert set(metrics["metrics"]) == {"test windows flagged"}
    assert "no labels" in " ".join(metrics["notes"])
    assert "no labels" in (run_dir / "report.md").read_text()
    rows = read_window_scores(run_dir)
    assert "label" not in rows[0]
    # The labels withheld from the recipe still say whether its scores point at the injected anomalies.
    known = [labels[int(r["start"]) : int(r["end"])].max() for r in rows]
    assert roc_auc_score(known, [float(r["autoencoder score"]) for r in rows]) > 0.5
    assert (run_dir / "plots/flagged_windows.png").exists()
