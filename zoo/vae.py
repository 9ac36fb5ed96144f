"""Variational autoencoder on any zoo family's networks (pythae's split: architecture vs objective).

The backbone (a dense, conv, LSTM or Transformer autoencoder) supplies the encoder trunk, the
decoder and its code head, which here predicts z_mean; the VAE adds a z_log_var head and the
objective: reconstruction (summed over features) + beta * KL (summed over latent dims), both
averaged over the batch, trained by a custom `train_step`.
"""

import keras
import numpy as np
from keras import ops

from zoo import losses
from zoo.backend import import_tensorflow, on_jax
from zoo.errors import ZooError, unknown_name
from zoo.layers import objective_test_step, objective_train_step
from zoo.registry import check_options, model_class, register_model

BACKBONES = ("dense", "conv", "lstm", "transformer")
LIKELIHOODS = ("bce", "mse")  # reconstruction losses that are a negative log-likelihood (up to constants)
# exp(0.5 * 10) ~ 148: far outside any useful spread, and safe from float16 overflow (~exp(11)).
LOG_VAR_LIMIT = 10.0


def reparameterize(z_mean, z_log_var, eps):
    """z = mu + sigma * eps with sigma = exp(0.5 * log_var): differentiable in mu and log_var."""
    return z_mean + ops.exp(0.5 * z_log_var) * eps


@register_model("vae")
class VAE(keras.Model):
    """Variational autoencoder; `call`/`encode` use the mean code, `sample` decodes draws from N(0, I).

    Args:
        input_shape: one example's shape, without the batch axis.
        latent_dim: width M of z.
        backbone: family providing the networks: "dense", "conv", "lstm" or "transformer".
        backbone_config: that family's options (see its class), e.g. {"filters": [32, 64]}.
        beta: weight of the KL term (beta-VAE; 1 is the ELBO).
        kl_warmup_steps: the KL weight ramps linearly from 0 to beta over this many steps (0: off).
        free_bits: nats of KL each latent dimension gets free (Kingma et al. 2016): the objective
            charges max(KL_d, free_bits) with KL_d averaged over the batch, so a dimension below
            it is not pushed onto the prior, which guards against posterior collapse. 0: off.
            The logged `kl_loss` is the true KL.
        reconstruction_loss: "bce" (from logits, data in [0, 1]) or "mse" (squared error summed).
        seed: seed of the training noise; draws are a function of (seed, step), so a resumed
            run repeats them exactly.

    Example:
        >>> vae = zoo.create("vae", input_shape=(28, 28, 1), latent_dim=2, backbone="conv")
        >>> vae.compile(keras.optimizers.Adam(1e-3)); vae.fit(x, epochs=10)  # logs loss, reconstruction_loss, kl_loss
        >>> images = vae.sample(16, seed=0)
    """

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        backbone="conv",
        backbone_config=None,
        beta=1.0,
        kl_warmup_steps=0,
        free_bits=0.0,
        reconstruction_loss="bce",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise unknown_name("VAE backbone", backbone, BACKBONES)
        if reconstruction_loss not in LIKELIHOODS:  # "psnr" is no log-likelihood: no ELBO from it
            raise unknown_name("VAE reconstruction loss", reconstruction_loss, LIKELIHOODS)
        backbone_config = dict(backbone_config or {})
        family = model_class(f"{backbone}_ae")
        check_options(family, backbone_config)
        if reconstruction_loss == "bce" and backbone_config.get("output_activation", "sigmoid") != "sigmoid":
            raise ZooError("reconstruction_loss='bce' needs output_activation='sigmoid'; use 'mse' for linear outputs")
        if float(beta) < 0 or int(kl_warmup_steps) < 0 or float(free_bits) < 0:
            raise ZooError(
                f"beta, kl_warmup_steps and free_bits must be >= 0, got {beta}, {kl_warmup_steps} and {free_bits}"
            )
        self.backbone = family(input_shape, latent_dim, dtype=self.dtype_policy, name="backbone", **backbone_config)
        self.data_shape, self.input_size = self.backbone.data_shape, self.backbone.input_size
        self.latent_dim = self.backbone.latent_dim
        self.backbone_name = backbone
        self.beta, self.kl_warmup_steps, self.free_bits = float(beta), int(kl_warmup_steps), float(free_bits)
        self.reconstruction_loss = reconstruction_loss
        self.seed = int(np.random.randint(2**31 - 1) if seed is None else seed)

        self.z_log_var_head = self.backbone.code_head_layer("z_log_var")
        self.z_log_var_head.build(self.backbone.encoder_trunk.output.shape)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.built = True

    # --- the model -------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        self.backbone.check_input(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def check_input(self, x, shape=None, what="inputs"):
        self.backbone.check_input(x, shape, what)

    def encode(self, x, training=False):
        """The mean code z_mean, shape (batch, latent_dim)."""
        return self.backbone.encode(x, training=training)

    def encode_distribution(self, x, training=False):
        """(z_mean, z_log_var) of q(z | x), both float32 of shape (batch, latent_dim)."""
        features = self.backbone.features(x, training=training)
        z_log_var = ops.clip(self.z_log_var_head(features), -LOG_VAR_LIMIT, LOG_VAR_LIMIT)
        return self.backbone.code_head(features), z_log_var

    def decode_logits(self, z, training=False):
        return self.backbone.decode_logits(z, training=training)

    def decode(self, z, training=False):
        """Reconstructions (the decoder's mean) from latent vectors of shape (batch, latent_dim)."""
        return self.backbone.decode(z, training=training)

    def call(self, x, training=False):
        return self.backbone.call(x, training=training)

    def sample(self, n, seed=None):
        """Decodes `n` draws z ~ N(0, I); the same seed gives the same samples."""
        eps = np.random.default_rng(seed).standard_normal((int(n), self.latent_dim)).astype("float32")
        return self.decode(eps)

    @property
    def encoder(self):
        """x -> z_mean as a functional model sharing this model's weights."""
        return self.backbone.encoder

    # --- the objective ---------------------------------------------------------------------
    def kl_weight(self, step):
        """beta, ramped linearly over the first kl_warmup_steps optimizer steps."""
        if not self.kl_warmup_steps:
            return self.beta
        return self.beta * ops.minimum(1.0, ops.cast(step + 1, "float32") / self.kl_warmup_steps)

    def elbo_terms(self, x, target, eps, training=False, per_dimension=False):
        """(reconstruction, kl) per example for z = mu + sigma * eps; kl per latent dimension too
        with `per_dimension` (shape (batch, latent_dim))."""
        z_mean, z_log_var = self.encode_distribution(x, training=training)
        logits = self.decode_logits(reparameterize(z_mean, z_log_var, eps), training=training)
        if self.reconstruction_loss == "bce":
            reconstruction = losses.bce(target, logits, reduce="sum", from_logits=True)
        else:
            reconstruction = losses.mse(target, self.backbone.output_layer(logits), reduce="sum")
        return reconstruction, losses.kl_divergence(z_mean, z_log_var, per_dimension)

    def _noise(self, batch_size, stream):
        # Stateless draws keyed by (seed, step, stream, replica): restored exactly on resume.
        if on_jax():
            return self._jax_noise(batch_size, stream)
        tf = import_tensorflow("the VAE's training noise")
        step = ops.cast(self.optimizer.iterations, "int64")
        seed = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(self.seed, "int64"), step]), stream)
        replica = tf.distribute.get_replica_context()
        if replica is not None:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
        return tf.random.stateless_normal((batch_size, self.latent_dim), seed=seed)

    def _jax_noise(self, batch_size, stream):
        import jax

        key = jax.random.fold_in(jax.random.key(self.seed), ops.cast(self.optimizer.iterations, "uint32"))
        return jax.random.normal(jax.random.fold_in(key, stream), (batch_size, self.latent_dim), "float32")

    def _step_losses(self, data, training):
        x, target, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ZooError("the VAE does not take sample weights; pass (x,) or (x, target)")
        target = x if target is None else target
        batch_size = ops.shape(x)[0]
        reconstruction, kl = self.elbo_terms(x, target, self._noise(batch_size, int(training)), training, True)
        reconstruction, kl = ops.mean(reconstruction), ops.mean(kl, axis=0)  # batch means; kl per dimension
        charged = ops.sum(ops.maximum(kl, self.free_bits)) if self.free_bits else ops.sum(kl)
        loss = reconstruction + self.kl_weight(self.optimizer.iterations) * charged
        return loss, reconstruction, ops.sum(kl), batch_size

    def _track(self, loss, reconstruction, kl, batch_size):
        weight = ops.cast(batch_size, "float32")  # per-example epoch means, partial batches included
        self.loss_tracker.update_state(loss, sample_weight=weight)
        self.reconstruction_tracker.update_state(reconstruction, sample_weight=weight)
        self.kl_tracker.update_state(kl, sample_weight=weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX.
        return objective_train_step(self, step_input, lambda data: self._step_losses(data, training=True), self._track)

    def test_step(self, *step_input):
        return objective_test_step(self, step_input, lambda data: self._step_losses(data, training=False), self._track)

    def make_test_function(self, force=False):
        # A jitted JAX test step reads the optimizer's step count (the KL warm-up's weight) as of
        # when it was traced: during a warm-up, trace it anew for each evaluation.
        return super().make_test_function(force=force or (on_jax() and self.kl_warmup_steps > 0))

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "backbone": self.backbone_name,
            "backbone_config": {
                "output_activation": self.backbone.output_activation,
                **self.backbone.family_config(),
            },
            "beta": self.beta,
            "kl_warmup_steps": self.kl_warmup_steps,
            "free_bits": self.free_bits,
            "reconstruction_loss": self.reconstruction_loss,
            "seed": self.seed,
        }
