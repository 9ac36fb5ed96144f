"""Wasserstein autoencoder with an MMD penalty (Tolstikhin et al. 2018) on any zoo family's networks.

A deterministic autoencoder whose aggregate code distribution is pulled onto the prior N(0, I)
by the maximum mean discrepancy between a batch of codes and a batch of prior draws, under the
inverse multiquadric kernel k(x, y) = C / (C + ||x - y||^2) with the paper's scale C = 2 M
(M = latent_dim, prior variance 1). `sample` decodes prior draws.
"""

import keras
from keras import ops

from zoo import losses
from zoo.backbone_model import PriorModel
from zoo.errors import ZooError
from zoo.registry import register_model


def inverse_multiquadric(a, b, scale):
    """Kernel matrix C / (C + ||a_i - b_j||^2), shape (len(a), len(b))."""
    distances = ops.sum(ops.square(a[:, None, :] - b[None, :, :]), axis=-1)
    return scale / (scale + distances)


def mmd(codes, prior, scale):
    """Unbiased estimate of MMD^2 between the distributions of `codes` and `prior` (batches of
    equal size n), inverse multiquadric kernel of scale `scale`."""
    codes, prior = ops.cast(codes, "float32"), ops.cast(prior, "float32")
    n = ops.cast(ops.shape(codes)[0], "float32")
    off_diagonal = lambda k: (ops.sum(k) - ops.trace(k)) / (n * (n - 1))
    within = off_diagonal(inverse_multiquadric(codes, codes, scale)) + off_diagonal(inverse_multiquadric(prior, prior, scale))
    return within - 2 * ops.mean(inverse_multiquadric(codes, prior, scale))


@register_model("wae")
class WAE(PriorModel):
    """Wasserstein autoencoder (WAE-MMD): a deterministic code matched to N(0, I) by an MMD penalty.

    Args:
        input_shape: one example's shape, without the batch axis.
        latent_dim: width M of the code.
        backbone: family providing encoder and decoder: "dense", "conv", "lstm" or "transformer".
        backbone_config: that family's options (see its class), e.g. {"filters": [32, 64]}.
        mmd_weight: lambda, the weight of the MMD between the batch's codes and prior draws
            against the reconstruction error (summed over features).
        reconstruction_loss: "bce" (from logits, data in [0, 1]) or "mse" (squared error summed).
        seed: seed of the prior draws.

    Example:
        >>> wae = zoo.create("wae", input_shape=(28, 28, 1), latent_dim=8, backbone="conv")
        >>> wae.compile(keras.optimizers.Adam(1e-3)); wae.fit(x, epochs=10)  # logs loss, reconstruction_loss, mmd_loss
        >>> images = wae.sample(16, seed=0)
    """

    type_name = "wae"

    def __init__(
        self,
        input_shape,
        latent_dim=8,
        backbone="conv",
        backbone_config=None,
        mmd_weight=10.0,
        reconstruction_loss="bce",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone_config = self.checked_backbone_config(backbone_config, reconstruction_loss)
        if float(mmd_weight) < 0:
            raise ZooError(f"mmd_weight must be >= 0, got {mmd_weight}")
        self.attach_backbone(backbone, backbone_config, input_shape, latent_dim, reconstruction_loss, seed)
        self.mmd_weight = float(mmd_weight)
        self.kernel_scale = 2.0 * self.latent_dim  # C = 2 M sigma^2 with the prior's sigma^2 = 1
        self.prior_seed = keras.random.SeedGenerator(self.seed, name="prior_seed")
        self.trackers = [keras.metrics.Mean(name=name) for name in ("loss", "reconstruction_loss", "mmd_loss")]
        self.built = True

    # --- the objective ---------------------------------------------------------------------
    def mmd(self, codes, prior):
        """MMD^2 estimate between `codes` and `prior` draws under this model's kernel."""
        return mmd(codes, prior, self.kernel_scale)

    def step_losses(self, data, training):
        """(loss, reconstruction, MMD, batch size) of a batch."""
        x, target = self.unpack(data)
        codes = self.backbone.encode(x, training=training)
        logits = self.backbone.decode_logits(codes, training=training)
        reconstruction = ops.mean(losses.reconstruction_error(target, logits, self.reconstruction_loss, self.backbone.output_layer))
        penalty = self.mmd(codes, keras.random.normal(ops.shape(codes), seed=self.prior_seed))
        return reconstruction + self.mmd_weight * penalty, reconstruction, penalty, ops.shape(x)[0]

    def type_config(self):
        return {"mmd_weight": self.mmd_weight, **super().type_config()}
