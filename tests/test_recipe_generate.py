"""The generate recipe: its likelihood and sample-quality measures, and a --quick run end to end."""

import csv
import math

import numpy as np
import pytest
from scipy import linalg, special

import zoo
from recipes.engine.run import run_recipe
from recipes.tasks.generate import (
    active_units,
    bernoulli_draw,
    frechet_distance,
    likelihood_bounds,
    plot_manifold,
)

pytestmark = pytest.mark.slow  # recipe runs


@pytest.fixture(scope="module")
def small_vae():
    """An untrained dense VAE on 8x8 images with a 2-D latent space (a fast stand-in for the formulas)."""
    return zoo.create("vae", input_shape=(8, 8, 1), latent_dim=2, backbone="dense", seed=0)


def test_likelihood_bounds_agree_with_the_vae_objective(small_vae, digits):
    x = bernoulli_draw(digits.x_test[:64], np.random.default_rng(0))
    reconstruction, kl, _ = likelihood_bounds(small_vae, x, k=1, seed=3)
    # With k=1 the draws are eps ~ N(0, I) from the same seed: the zoo's own ELBO terms must match.
    eps = np.random.default_rng(3).standard_normal((len(x), 1, 2))[:, 0].astype("float32")
    zoo_reconstruction, zoo_kl = (np.asarray(t) for t in small_vae.elbo_terms(x, x, eps))
    np.testing.assert_allclose(reconstruction, zoo_reconstruction, rtol=1e-4)
    np.testing.assert_allclose(kl, zoo_kl, rtol=1e-4)

    _, _, nll = likelihood_bounds(small_vae, x, k=200, seed=3)
    assert np.all(np.isfinite(nll)) and np.all(nll > 0)


def test_active_units_count_the_latent_dimensions_that_depend_on_the_input(digits):
    vae = zoo.create("vae", input_shape=(8, 8, 1), latent_dim=6, backbone="dense", seed=0)
    head = vae.backbone.code_head  # z_mean
    kernel = np.random.default_rng(0).normal(0, 3, head.kernel.shape).astype("float32")
    kernel[:, 3:] = 0  # dimensions 3-5: the same mean code for every input, as after posterior collapse
    head.kernel.assign(kernel)
    head.bias.assign(np.zeros(head.bias.shape, "float32"))
    assert active_units(vae, digits.x_test) == 3


def test_frechet_distance_matches_the_matrix_square_root_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 12))
    b = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 1.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_latent_manifold_plot(small_vae, tmp_path):
    path = plot_manifold(tmp_path, small_vae, side=5)
    assert (tmp_path / path).stat().st_size > 0


def test_quick_run_vae_beats_plain_autoencoder_samples(tmp_path, mnist):
    # The comparison types have a test of their own (below).
    run_dir, metrics = run_recipe("generate", quick=True, out=tmp_path / "g", verbose=0, sets=["params.compare={}"])
    values = metrics["metrics"]

    with open(run_dir / "vae" / "history.csv", newline="") as f:
        columns = csv.DictReader(f).fieldnames
    assert {"loss", "reconstruction_loss", "kl_loss"} <= set(columns)

    assert 1 <= values["active latent units (of 16)"]["VAE"] <= 16
    elbo = values["negative ELBO (nats)"]["VAE"]
    nll = values["NLL, importance-sampled (nats)"]["VAE"]
    assert math.isfinite(elbo) and math.isfinite(nll)
    assert 0 < nll <= elbo
    assert elbo == pytest.approx(values["ELBO reconstruction term (nats)"]["VAE"] + values["ELBO KL term (nats)"]["VAE"])

    # BCE against [0, 1] targets is at least their entropy, and the KL is >= 0: a floor under both VAEs;
    # 784 log 2 is a decoder that predicts 0.5 everywhere.
    x = mnist.x_test.reshape(len(mnist.x_test), -1).astype("float64")
    entropy = np.mean(-np.sum(special.xlogy(x, x) + special.xlogy(1 - x, 1 - x), axis=1))
    continuous = values["negative ELBO on continuous pixels, one draw of z (nats)"]
    for method in ("VAE", "tutorial VAE"):
        assert entropy < continuous[method] < 784 * math.log(2), method
    ratio = values["negative ELBO on continuous pixels, one draw of z (nats), ours / tutorial VAE"]["VAE"]
    assert ratio == pytest.approx(continuous["VAE"] / continuous["tutorial VAE"])
    assert (run_dir / "tutorial" / "history.csv").exists()

    quality = values["Fréchet distance to test images (classifier features)"]
    assert quality["VAE"] < quality["plain autoencoder"]
    assert quality["training images (reference)"] < quality["VAE"]

    notes = " ".join(metrics["notes"])
    assert "binarisation" in notes and "89.9" in notes
    for path in ("report.md", "model.keras", "plots/samples.png", "plots/interpolations.png"):
        assert (run_dir / path).exists(), path


def test_quick_run_compares_the_generative_types_beside_the_vae(tmp_path):
    compare = '{ "IWAE (k=2)" = { name = "vae", bound = "iwae", samples = 2 }, WAE = { name = "wae" }, AAE = { name = "aae" } }'
    sets = [f"params.compare={compare}", "params.tutorial_baseline=false", "params.importance_samples=5",
            "params.classifier_epochs=1", "params.quality_samples=100", "quick.train_examples=300",
            "quick.test_examples=200"]
    run_dir, metrics = run_recipe("generate", data="digits", quick=True, epochs=1, sets=sets, out=tmp_path / "g", verbose=0)
    values = metrics["metrics"]
    for metric in ("negative ELBO (nats)", "NLL, importance-sampled (nats)"):
        assert set(values[metric]) == {"VAE", "IWAE (k=2)"}  # the types with a posterior q(z|x)
        assert all(math.isfinite(v) for v in values[metric].values()), metric
    assert 0 < values["NLL, importance-sampled (nats)"]["IWAE (k=2)"] <= values["negative ELBO (nats)"]["IWAE (k=2)"]
    for metric in ("Fréchet distance to test images (classifier features)", "active latent units (of 16)"):
        assert {"VAE", "IWAE (k=2)", "WAE", "AAE"} <= set(values[metric]), metric
        assert all(math.isfinite(v) for v in values[metric].values()), metric
    assert 0 <= values["active latent units (of 16)"]["WAE"] <= 16
    for tag in ("compare-iwae-k-2", "compare-wae", "compare-aae"):
        assert (run_dir / tag / "history.csv").exists(), tag


def test_cvae_run_reports_conditional_accuracy_and_per_class_distances(tmp_path, digits):
    sets = ["params.tutorial_baseline=false", "params.classifier_epochs=1", "params.quality_samples=200"]
    run_dir, metrics = run_recipe("generate", model="cvae", data="digits", quick=True, epochs=1, sets=sets,
                                  out=tmp_path / "c", verbose=0)
    values = metrics["metrics"]
    accuracy = values["conditional accuracy (samples classified as the class asked for)"]
    assert 0 <= accuracy["CVAE"] <= 1 and 0 <= accuracy["test images (the classifier's accuracy)"] <= 1
    for c in np.unique(digits.y_train):
        distances = values[f"Fréchet distance to test images of class {c} (classifier features)"]
        assert math.isfinite(distances["CVAE"]) and distances["CVAE"] >= 0, c
        assert math.isfinite(distances["training images of the class (reference)"]), c
    assert (run_dir / "cvae" / "history.csv").exists() and (run_dir / "plots" / "samples.png").exists()


def test_cvae_without_labels_or_with_labels_outside_its_classes_is_refused(tmp_path, digits):
    images = tmp_path / "images.npy"
    np.save(images, digits.x_train[:50])
    with pytest.raises(zoo.ZooError, match=r"the cvae .* has none; use a labelled data set"):
        run_recipe("generate", model="cvae", data=str(images), quick=True, out=tmp_path / "a", verbose=0)
    with pytest.raises(zoo.ZooError, match=r"outside model.num_classes=5; set model.num_classes to 10"):
        run_recipe("generate", model="cvae", data="digits", quick=True, sets=["model.num_classes=5"],
                   out=tmp_path / "b", verbose=0)
