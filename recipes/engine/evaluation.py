"""Evaluation helpers shared by the tasks: image quality metrics and batched prediction."""

import numpy as np


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
