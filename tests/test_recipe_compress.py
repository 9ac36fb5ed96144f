"""The compress recipe: its arithmetic coder on skewed indices, then end to end on the embedded MNIST subset (--quick)."""

import math

import keras
import numpy as np
import pytest

from recipes.engine.run import resolve, run_recipe
from recipes.tasks.compress import FrequencyTables, decode_indices, encode_indices
from zoo.data import load
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # recipe runs


def test_arithmetic_coder_round_trips_within_two_bytes_of_the_ideal_length():
    rng = np.random.default_rng(0)
    cells, codes = 49, 64
    shares = rng.dirichlet(np.full(codes, 0.3), size=cells)  # one skewed distribution per cell
    training = np.stack([[rng.choice(codes, p=p) for p in shares] for _ in range(2000)])
    tables = FrequencyTables.fit(training, codes)
    test = np.stack([[rng.choice(codes, p=p) for p in shares] for _ in range(200)])
    for row in test:
        stream = encode_indices(row.tolist(), tables)
        assert np.array_equal(decode_indices(stream, tables), row)
        ideal_bits = -sum(math.log2((c[s + 1] - c[s]) / c[-1]) for s, c in zip(row, tables.cumulative))
        assert len(stream) <= ideal_bits / 8 + 2
    assert np.array_equal(decode_indices(encode_indices([0] * cells, tables), tables), np.zeros(cells))


@pytest.fixture(scope="module")
def compress_run(quick_run):
    return quick_run("compress")


def test_quick_run_codes_real_bytes_that_decode_to_the_models_indices(compress_run):
    run_dir, metrics = compress_run
    rows = metrics["metrics"]
    coded = rows["VQ-VAE, arithmetic-coded indices"]
    assert all(np.isfinite(value) for values in rows.values() for value in values.values())
    saved = np.load(run_dir / "coded.npz")
    offsets, streams = saved["offsets"], saved["streams"].tobytes()
    assert coded["bytes per image"] == pytest.approx(np.diff(offsets).mean())
    assert coded["bytes per image"] < rows["VQ-VAE, packed indices"]["bytes per image"]

    model = keras.saving.load_model(run_dir / "model.keras")
    images = load("mnist5k").x_test[: metrics["test_examples"]]
    indices = np.asarray(model.encode(images)).reshape(len(images), -1)
    assert len(offsets) == len(images) + 1
    tables = FrequencyTables(saved["counts"])
    for row, start, end in zip(indices, offsets[:-1], offsets[1:]):
        assert np.array_equal(decode_indices(streams[start:end], tables), row)


def test_quick_run_reports_jpeg_webp_and_pca_baselines(compress_run):
    run_dir, metrics = compress_run
    rows = metrics["metrics"]
    params = resolve("compress", quick=True)["params"]
    for image_format, key in (("JPEG", "jpeg_qualities"), ("WebP", "webp_qualities")):
        sizes = [rows[f"{image_format} quality {q}"]["bytes per image"] for q in sorted(params[key])]
        assert sizes == sorted(sizes) and sizes[0] > 20  # whole files: headers included, larger at higher quality
    for m in params["pca_components"]:
        assert rows[f"PCA {m} components, 8-bit"]["bytes per image"] == m
    assert rows["WebP quality 90"]["PSNR (dB)"] > rows["WebP quality 0"]["PSNR (dB)"]
    assert (run_dir / "plots/rate_distortion.png").exists()


@pytest.mark.parametrize("setting", ["params.webp_qualities=[101]", "params.jpeg_qualities=[-1]", "params.pca_components=[0]"])
def test_settings_out_of_range_are_refused(setting):
    with pytest.raises(ZooError, match=setting.split("=")[0]):
        resolve("compress", sets=[setting])


@pytest.mark.parametrize(("options", "message"), [
    ({"model": "conv_ae"}, "must be vq_vae"),
    ({"sets": ["params.jpeg_qualities=[]"]}, "params.jpeg_qualities is empty"),
    ({"sets": ["params.pca_components=[5000]"]}, "at most 784"),
])
def test_recipe_refuses_what_it_cannot_code_before_training(tmp_path, options, message):
    with pytest.raises(ZooError, match=message):
        run_recipe("compress", quick=True, out=tmp_path / "run", verbose=0, **options)
    assert not (tmp_path / "run" / "model").exists()
