"""Report tables: counts print as counts, measurements with their precision; the docs pages' generated sections."""

import json

import numpy as np
import pytest

from recipes.engine.report import Results
from zoo.presets import metrics_table


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
    from recipes.tools import benchmark, doc_tables
    from zoo import ZooError, presets

    (tmp_path / "docs").mkdir()
    results = tmp_path / "docs" / "results.md"
    section = doc_tables.read_docs_section("benchmark")
    conv_heading = next(line for line in section.splitlines() if line.startswith("**reduce (conv_ae)**"))
    classify_heading = next(line for line in section.splitlines() if line.startswith("**classify**"))
    stale = section.replace(conv_heading, conv_heading + " stale").replace(classify_heading, classify_heading + " kept")
    results.write_text((doc_tables.REPOSITORY / "docs" / "results.md").read_text().replace(section, stale))
    monkeypatch.setattr(doc_tables, "REPOSITORY", tmp_path)
    monkeypatch.chdir(tmp_path)  # a run the benchmark started would land in tmp_path/runs

    benchmark.full(docs=True, only=["conv_ae_fashion_mnist"])
    remade = doc_tables.read_docs_section("benchmark")
    card = presets.preset_info("conv_ae_fashion_mnist")
    assert f"**reduce (conv_ae)** — `{card['command']}`" in remade and " stale" not in remade
    assert classify_heading + " kept" in remade  # the expensive runs' tables stay as they were
    assert remade.count("**") == section.count("**") and not (tmp_path / "runs").exists()
    with pytest.raises(ZooError, match="unknown benchmark run 'conv_ae'; choose one of: anomaly"):
        benchmark.full(docs=False, only=["conv_ae"])


def test_preset_tables_fill_the_readme_and_the_presets_page_with_each_headline_and_its_baselines(tmp_path, monkeypatch):
    from recipes.tools import build_presets as preset_builder
    from recipes.tools import doc_tables
    from zoo import presets

    (tmp_path / "docs").mkdir()
    for page in ["README.md", "docs/presets.md"]:
        (tmp_path / page).write_text("before\n<!-- presets:start -->\nstale\n<!-- presets:end -->\nafter\n")
    monkeypatch.setattr(doc_tables, "REPOSITORY", tmp_path)

    preset_builder.preset_tables()
    readme, page = (doc_tables.read_docs_section("presets", page=p) for p in ["README.md", "docs/presets.md"])
    denoise = presets.preset_info("conv_ae_denoise_fashion_mnist")
    tutorial = denoise["metrics"]["PSNR (dB), gaussian σ=0.5"]["tutorial denoiser"]
    for table in (readme, page):
        assert len(table.splitlines()) == 2 + len(presets.list_presets()) and "stale" not in table
        row = next(line for line in table.splitlines() if "conv_ae_denoise_fashion_mnist" in line)
        assert denoise["headline"] in row and f"tutorial denoiser {tutorial:.4g}" in row
    assert "(zoo/presets/conv_ae_denoise_fashion_mnist/README.md)" in readme and "zoo/presets/" not in page
    assert (tmp_path / "README.md").read_text().startswith("before\n") and page.count("`vae`") == 2
