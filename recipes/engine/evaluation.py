"""Evaluation helpers shared by the tasks and benchmarks: image quality metrics, batched prediction,
probes of codes, likelihood bounds of a VAE and the Fréchet distance of samples."""

import numpy as np
from scipy import special
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from zoo.losses import kl_divergence

LOG_2PI = np.log(2 * np.pi)


def psnr(clean, restored, mask=None):
    """Mean PSNR in dB over images in [0, 1] (over the masked pixels only when `mask` is given)."""
    axes = tuple(range(1, clean.ndim))
    squared = (clean.astype("float64") - restored) ** 2
    if mask is None:
        mse = squared.mean(axis=axes)
    else:
        mse = (squared * mask).sum(axis=axes) / np.maximum(mask.sum(axis=axes), 1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def ssim(clean, restored):
    """Mean SSIM over images in [0, 1] (scikit-image, per channel)."""
    from skimage.metrics import structural_similarity

    return float(
        np.mean([
            structural_similarity(c, r, data_range=1.0, channel_axis=-1 if c.ndim == 3 else None)
            for c, r in zip(clean, restored)
        ])
    )


def first_examples(x, n):
    """The first n examples of x as a float32 array (streamed files decoded) and a note when that is a cut."""
    cut = x[:n]
    subset = cut if isinstance(cut, np.ndarray) else cut.numpy()
    note = f"the first {len(subset):,} of the {len(x):,} test images" if len(subset) < len(x) else f"all {len(x):,} test images"
    return subset, note


def mean_example(x, batch_size=1024):
    """The mean over the examples of x (an array, or streamed files summed batch by batch)."""
    if isinstance(x, np.ndarray):
        return x.mean(axis=0)
    total = sum(batch.astype("float64").sum(axis=0) for batch in batches(x, batch_size))
    return (total / len(x)).astype("float32")


def batches(x, batch_size=256):
    """x batch by batch as NumPy: slices of an array, or `ImageFiles` decoded in parallel."""
    if isinstance(x, np.ndarray):
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size]
    else:
        yield from x.dataset(batch_size).as_numpy_iterator()


def predict(model, x, batch_size=256):
    """model(x) in batches as float32 NumPy (x: an array or `ImageFiles`)."""
    if not isinstance(x, np.ndarray):
        return np.asarray(model.predict(x.dataset(batch_size), verbose=0), dtype="float32")
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype="float32")


def probe_accuracies(train_codes, y_train, test_codes, y_test, neighbours):
    """(linear-probe accuracy, k-NN accuracy) of codes on the test split, both fitted on the train codes."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    knn = KNeighborsClassifier(n_neighbors=neighbours)
    with threadpool_limits(1):  # on 2 busy cores, BLAS/OpenMP threads waiting on each other made the probe 15x slower
        return tuple(float(clf.fit(train_codes, y_train).score(test_codes, y_test)) for clf in (probe, knn))


def log_likelihood(targets, logits):
    """log p(x | z) summed over pixels for binary targets (for targets in [0, 1], minus the summed BCE):
    x*l - softplus(l), stable in float32, summed in float64."""
    softplus = np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))
    return np.sum(targets * logits - softplus, axis=-1, dtype="float64")


def likelihood_bounds(vae, x, k, seed, decodes_per_batch=8192):
    """Per-image (reconstruction term, KL, importance-sampled NLL) in nats, float64.

    Args:
        vae: a trained zoo VAE with the Bernoulli likelihood (reconstruction_loss="bce"), or any
            model with its `encode_distribution`, `decode_logits` and `latent_dim`.
        x: binary images (images in [0, 1]: the reconstruction term is the summed BCE; the NLL
            is then no likelihood).
        k: draws z ~ q(z|x) per image, shared by the ELBO's reconstruction term and the NLL.
        seed: seeds the draws.
    """
    rng = np.random.default_rng(seed)
    per_batch = max(1, decodes_per_batch // k)
    reconstruction, kl, nll = [], [], []
    for start in range(0, len(x), per_batch):
        images = x[start : start + per_batch]
        z_mean, z_log_var = (np.asarray(t, "float64") for t in vae.encode_distribution(images))
        eps = rng.standard_normal((len(images), k, vae.latent_dim))
        z = (z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * eps).astype("float32")
        logits = np.asarray(vae.decode_logits(z.reshape(-1, vae.latent_dim)), "float32")
        log_p_x = log_likelihood(images.reshape(len(images), 1, -1), logits.reshape(len(images), k, -1))
        z = z.astype("float64")
        log_p_z = -0.5 * np.sum(z**2 + LOG_2PI, axis=-1)
        log_q_z = -0.5 * np.sum((z - z_mean[:, None]) ** 2 / np.exp(z_log_var)[:, None] + z_log_var[:, None] + LOG_2PI, axis=-1)
        nll.append(np.log(k) - special.logsumexp(log_p_x + log_p_z - log_q_z, axis=1))
        reconstruction.append(-log_p_x.mean(axis=1))
        kl.append(np.asarray(kl_divergence(z_mean, z_log_var), "float64"))
    return tuple(np.concatenate(parts) for parts in (reconstruction, kl, nll))


def frechet_distance(a, b):
    """Fréchet distance between Gaussians fitted to feature sets a and b (rows are examples).

    |mean_a - mean_b|^2 + tr(A + B - 2 (A B)^1/2), with tr((A B)^1/2) taken as the trace of the
    symmetric (A^1/2 B A^1/2)^1/2: stable where dead ReLU features make A or B singular.
    """
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)))
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)
