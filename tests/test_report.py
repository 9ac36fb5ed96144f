"""Report tables: counts print as counts, measurements with their precision."""

import json

import numpy as np

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
