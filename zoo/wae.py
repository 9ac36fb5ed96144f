"""Wasserstein autoencoder with an MMD penalty (Tolstikhin et al. 2018) on any zoo family's networks.

A deterministic autoencoder whose aggregate code distribution is pulled onto the prior N(0, I)
by the maximum mean discrepancy between a batch of codes and a batch of prior draws, under the
inverse multiquadric kernel k(x, y) = C / (C + ||x - y||^2) with the paper's scale C = 2 M
(M = latent_dim, prior variance 1). `sample` decodes prior draws.
"""

import keras
import numpy as np
from keras import ops

from zoo import losses
from zoo.autoencoder import build_backbone
from zoo.errors import ZooError
from zoo.layers import objective_test_step, objective_train_step
from zoo.registry import register_model

BACKBONES = ("dense", "conv", "lstm", "transformer")


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
class WAE(keras.Model):
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
        backbone_config = dict(backbone_config or {})
        losses.check_reconstruction_error("wae", reconstruction_loss, backbone_config.get("output_activation", "sigmoid"))
        if float(mmd_weight) < 0:
            raise ZooError(f"mmd_weight must be >= 0, got {mmd_weight}")
        self.backbone = build_backbone("wae", backbone, backbone_config, input_shape, latent_dim, self.dtype_policy, BACKBONES)
        self.data_shape, self.latent_dim = self.backbone.data_shape, self.backbone.latent_dim
        self.backbone_name, self.reconstruction_loss = backbone, reconstruction_loss
        self.mmd_weight = float(mmd_weight)
        self.kernel_scale = 2.0 * self.latent_dim  # C = 2 M sigma^2 with the prior's sigma^2 = 1
        self.seed = int(np.random.randint(2**31 - 1) if seed is None else seed)
        self.prior_seed = keras.random.SeedGenerator(self.seed, name="prior_seed")
        self.trackers = [keras.metrics.Mean(name=name) for name in ("loss", "reconstruction_loss", "mmd_loss")]
        self.built = True

    # --- the model -------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        self.backbone.check_input(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def check_input(self, x, shape=None, what="inputs"):
        self.backbone.check_input(x, shape, what)

    def encode(self, x, training=False):
        """Codes, float32 of shape (batch, latent_dim)."""
        return self.backbone.encode(x, training=training)

    def decode(self, z, training=False):
        """Reconstructions from codes of shape (batch, latent_dim)."""
        return self.backbone.decode(z, training=training)

    def call(self, x, training=False):
        return self.backbone.call(x, training=training)

    def sample(self, n, seed=None):
        """Decodes `n` draws of the prior N(0, I); the same seed gives the same samples."""
        z = np.random.default_rng(seed).standard_normal((int(n), self.latent_dim)).astype("float32")
        return self.decode(z)

    @property
    def encoder(self):
        """x -> code as a functional model sharing this model's weights."""
        return self.backbone.encoder

    # --- the objective ---------------------------------------------------------------------
    def mmd(self, codes, prior):
        """MMD^2 estimate between `codes` and `prior` draws under this model's kernel."""
        return mmd(codes, prior, self.kernel_scale)

    def _step_losses(self, data, training):
        x, target, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ZooError("the wae does not take sample weights; pass (x,) or (x, target)")
        target = x if target is None else target
        codes = self.backbone.encode(x, training=training)
        logits = self.backbone.decode_logits(codes, training=training)
        reconstruction = ops.mean(losses.reconstruction_error(target, logits, self.reconstruction_loss, self.backbone.output_layer))
        penalty = self.mmd(codes, keras.random.normal(ops.shape(codes), seed=self.prior_seed))
        return reconstruction + self.mmd_weight * penalty, reconstruction, penalty, ops.shape(x)[0]

    def _track(self, loss, reconstruction, penalty, batch_size):
        weight = ops.cast(batch_size, "float32")
        for tracker, value in zip(self.trackers, (loss, reconstruction, penalty)):
            tracker.update_state(value, sample_weight=weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX.
        return objective_train_step(self, step_input, lambda data: self._step_losses(data, training=True), self._track)

    def test_step(self, *step_input):
        return objective_test_step(self, step_input, lambda data: self._step_losses(data, training=False), self._track)

    @property
    def metrics(self):
        return list(self.trackers)

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "backbone": self.backbone_name,
            "backbone_config": self.backbone.backbone_config(),
            "mmd_weight": self.mmd_weight,
            "reconstruction_loss": self.reconstruction_loss,
            "seed": self.seed,
        }
