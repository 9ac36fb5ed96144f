"""Report tables: counts print as counts, measurements with their precision; README sections."""

import json

import numpy as np
import pytest

from recipes.report import Results, metrics_table


def test_counts_stay_integers_and_measurements_keep_decimals():
    results = Results()
    results.add("active latent units (of 2)", {"VAE": np.int64(2)})
    results.add("reconstruction MSE", {"VAE": np.float32(2.0), "PCA": None})
    assert json.loads(json.dumps(results.metrics)) == {
        "active latent units (of 2)": {"VAE": 2},
        "reconstruction MSE": {"VAE": 2.0, "PCA": None},
    }
    rows = metrics_table(results.metrics).splitlines()
    assert rows[2] == "| active latent units (of 2) | 2 | – |"
    assert rows[3] == "| reconstruction MSE | 2.0000 | – |"


def test_benchmark_only_makes_the_named_table_anew_and_keeps_the_others(tmp_path, monkeypatch):
    from recipes import benchmark, report
    from zoo import ZooError, presets

    readme = tmp_path / "README.md"
    section = report.read_readme_section("benchmark")
    conv_heading = next(line for line in section.splitlines() if line.startswith("**reduce (conv_ae)**"))
    classify_heading = next(line for line in section.splitlines() if line.startswith("**classify**"))
    stale = section.replace(conv_heading, conv_heading + " stale").replace(classify_heading, classify_heading + " kept")
    readme.write_text(report.README.read_text().replace(section, stale))
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.chdir(tmp_path)  # a run the benchmark started would land in tmp_path/runs

    benchmark.full(readme=True, only=["conv_ae_fashion_mnist"])
    remade = report.read_readme_section("benchmark")
    card = presets.preset_info("conv_ae_fashion_mnist")
    assert f"**reduce (conv_ae)** — `{card['command']}`" in remade and " stale" not in remade
    assert classify_heading + " kept" in remade  # the expensive runs' tables stay as they were
    assert remade.count("**") == section.count("**") and not (tmp_path / "runs").exists()
    with pytest.raises(ZooError, match="unknown benchmark run 'conv_ae'; choose one of: anomaly"):
        benchmark.full(readme=False, only=["conv_ae"])
