"""Reconstruction losses and the VAE's KL term, in float32 whatever the compute dtype.

Per-example values: `mse`/`bce` average over features by default (a Keras `loss=` for the
plain autoencoders); the VAE sums them over features (`reduce="sum"`), as its likelihood
needs, and averages the sum over the batch.
"""

import keras
from keras import ops

from zoo.errors import ZooError, unknown_name

SUMMED_LOSSES = ("bce", "mse")  # the reconstruction errors `reconstruction_error` computes


def _reduce_features(values, reduce):
    axes = tuple(range(1, len(values.shape)))
    return ops.sum(values, axis=axes) if reduce == "sum" else ops.mean(values, axis=axes)


@keras.saving.register_keras_serializable(package="zoo")
def mse(y_true, y_pred, reduce="mean"):
    """Squared error per example, averaged (or summed) over every non-batch axis."""
    y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
    return _reduce_features(ops.square(y_true - y_pred), reduce)


@keras.saving.register_keras_serializable(package="zoo")
def bce(y_true, y_pred, reduce="mean", from_logits=False):
    """Binary cross-entropy per example for targets in [0, 1].

    With `from_logits=True` it is computed from logits (stable in any precision). Given a
    sigmoid output of a zoo model, the TensorFlow backend recovers the logits by itself.
    """
    # y_pred is passed on untouched: a cast would drop the logits the backend keeps on it.
    values = ops.binary_crossentropy(ops.cast(y_true, y_pred.dtype), y_pred, from_logits=from_logits)
    return _reduce_features(ops.cast(values, "float32"), reduce)


@keras.saving.register_keras_serializable(package="zoo")
def negative_psnr(y_true, y_pred):
    """Minus the PSNR in dB per example, for data in [0, 1]: -10 log10(MSE).

    The restoration recipes report the mean of per-image PSNRs. Its gradient weights each
    image's squared error by the inverse of that image's MSE, so an image already restored well
    counts as much as a hard one, where MSE and BCE let the hard images' pixels dominate. The
    floor (60 dB) keeps a perfect image's weight finite.
    """
    error = mse(y_true, y_pred)
    return 10.0 * ops.log10(error + 1e-6)


def check_reconstruction_error(model_type, kind, output_activation):
    """Refuses a reconstruction error `reconstruction_error` lacks, or "bce" on a linear output."""
    if kind not in SUMMED_LOSSES:
        raise unknown_name(f"{model_type} reconstruction loss", kind, SUMMED_LOSSES)
    if kind == "bce" and output_activation != "sigmoid":
        raise ZooError("reconstruction_loss='bce' needs output_activation='sigmoid'; use 'mse' for linear outputs")


def reconstruction_error(target, logits, kind, output_layer):
    """Per-example reconstruction error summed over features, from decoder `logits`: "bce" (from
    logits, data in [0, 1]) or "mse" (squared error of `output_layer(logits)`)."""
    if kind == "bce":
        return bce(target, logits, reduce="sum", from_logits=True)
    return mse(target, output_layer(logits), reduce="sum")


def kl_divergence(z_mean, z_log_var, per_dimension=False):
    """KL(N(mu, sigma^2) || N(0, I)) per example: 0.5 * sum(exp(lv) + mu^2 - 1 - lv);
    with `per_dimension`, the terms of each latent dimension, unsummed."""
    z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
    terms = 0.5 * (ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var)
    return terms if per_dimension else ops.sum(terms, axis=-1)


RECONSTRUCTION_LOSSES = {"mse": mse, "bce": bce, "psnr": negative_psnr}


def get(name):
    """`"mse"`, `"bce"` or `"psnr"` -> the loss function; a ZooError naming the valid ones otherwise."""
    if name not in RECONSTRUCTION_LOSSES:
        raise unknown_name("reconstruction loss", name, RECONSTRUCTION_LOSSES)
    return RECONSTRUCTION_LOSSES[name]


def nt_xent(projections, temperature):
    """SimCLR's contrastive loss (normalised temperature-scaled cross-entropy), averaged over views.

    `projections` stacks two views of the same B examples, (2B, D): rows i and i + B are one
    example's. Each row must pick its twin out of the other 2B - 1 rows by cosine similarity
    divided by `temperature`; the other examples' views are its negatives.
    """
    z = ops.normalize(ops.cast(projections, "float32"), axis=-1)
    views = ops.shape(z)[0]
    half = views // 2
    # A row's similarity to itself is excluded: it would always win.
    logits = ops.matmul(z, ops.transpose(z)) / temperature - 1e9 * ops.eye(views)
    twins = ops.concatenate([ops.arange(half, views), ops.arange(0, half)])
    return ops.mean(keras.losses.sparse_categorical_crossentropy(twins, logits, from_logits=True))
