"""Variational autoencoder on any zoo family's networks (pythae's split: architecture vs objective).

The backbone (a dense, conv, LSTM or Transformer autoencoder) supplies the encoder trunk, the
decoder and its code head, which here predicts z_mean; the VAE adds a z_log_var head and the
objective: reconstruction (summed over features) + beta * KL (summed over latent dims), both
averaged over the batch, trained by a custom `train_step`. Two options change the objective:
the importance-weighted bound (Burda et al. 2016) and a total-correlation weight (beta-TCVAE,
Chen et al. 2018).
"""

import math


import keras
from keras import ops

from zoo import losses
from zoo.autoencoder import check_plain_options, whole_number
from zoo.backbone_model import BACKBONES, PriorModel, random_seed
from zoo.backend import import_tensorflow, on_jax
from zoo.errors import ZooError, unknown_name
from zoo.layers import quantized_dtype
from zoo.registry import check_options, model_class, register_model

BOUNDS = ("elbo", "iwae")
LIKELIHOODS = ("bce", "mse")  # reconstruction losses that are a negative log-likelihood (up to constants)
# exp(0.5 * 10) ~ 148: far outside any useful spread, and safe from float16 overflow (~exp(11)).
LOG_VAR_LIMIT = 10.0


def reparameterize(z_mean, z_log_var, eps):
    """z = mu + sigma * eps with sigma = exp(0.5 * log_var): differentiable in mu and log_var."""
    return z_mean + ops.exp(0.5 * z_log_var) * eps


def gaussian_log_density(z, mean, log_var):
    """log N(z; mean, exp(log_var)) per coordinate (no sum)."""
    return -0.5 * (math.log(2 * math.pi) + log_var + ops.square(z - mean) * ops.exp(-log_var))


def total_correlation(z, z_mean, z_log_var):
    """Batch mean of the minibatch estimate (Chen et al. 2018) of TC = KL(q(z) || prod_d q(z_d)): q(z_i)
    and each q(z_id) are averages of every example's posterior in the batch at z_i. The
    normalisers of q(z) and of the D marginals leave (D - 1) log M; they shift the value only,
    not its gradient."""
    log_q = gaussian_log_density(z[:, None, :], z_mean[None, :, :], z_log_var[None, :, :])  # (i, j, d)
    batch = ops.cast(ops.shape(z)[0], "float32")
    log_joint = ops.logsumexp(ops.sum(log_q, axis=-1), axis=1)
    log_marginals = ops.sum(ops.logsumexp(log_q, axis=1), axis=-1)
    return ops.mean(log_joint - log_marginals) + (z.shape[-1] - 1) * ops.log(batch)


@register_model("vae")
class VAE(PriorModel):
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
        bound: "elbo" (the evidence lower bound) or "iwae": the k-sample importance-weighted bound
            log mean_k p(x, z_k) / q(z_k | x) (Burda et al. 2016), tighter as k grows; with beta or
            a warm-up the log-ratio log q(z_k | x) / p(z_k) is weighted like the KL term.
        samples: k, the draws of z per example for bound="iwae".
        tc_weight: extra weight of the total correlation of q(z) (beta-TCVAE, Chen et al. 2018;
            the paper's beta is 1 + tc_weight), estimated by minibatch-weighted sampling; logged
            as `tc_loss`. 0: off.
        dtype: a Keras dtype policy or `DTypePolicyMap`, passed to the backbone (see
            `zoo.autoencoder.Autoencoder`); the z_log_var head stays float32 like the code head.
            After `quantize("int8")` the config records the quantized layers, so the model saves
            and loads as int8.

    Example:
        >>> vae = zoo.create("vae", input_shape=(28, 28, 1), latent_dim=2, backbone="conv")
        >>> vae.compile(keras.optimizers.Adam(1e-3)); vae.fit(x, epochs=10)  # logs loss, reconstruction_loss, kl_loss
        >>> images = vae.sample(16, seed=0)
    """

    type_name = "VAE"

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
        bound="elbo",
        samples=None,
        tc_weight=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bound, self.samples, self.tc_weight = check_bound(bound, samples, tc_weight, free_bits)
        if backbone not in BACKBONES:
            raise unknown_name("VAE backbone", backbone, BACKBONES)
        if reconstruction_loss not in LIKELIHOODS:  # "psnr" is no log-likelihood: no ELBO from it
            raise unknown_name("VAE reconstruction loss", reconstruction_loss, LIKELIHOODS)
        backbone_config = dict(backbone_config or {})
        family = model_class(f"{backbone}_ae")
        check_options(family, backbone_config)
        check_plain_options("vae", backbone_config)
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
        self.seed = random_seed(seed)

        self.z_log_var_head = self.backbone.code_head_layer("z_log_var")
        self.z_log_var_head.build(self.backbone.encoder_trunk.output.shape)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.tc_tracker = keras.metrics.Mean(name="tc_loss") if self.tc_weight else None
        self.built = True

    # --- the model -------------------------------------------------------------------------
    def encode_distribution(self, x, training=False):
        """(z_mean, z_log_var) of q(z | x), both float32 of shape (batch, latent_dim)."""
        features = self.backbone.features(x, training=training)
        z_log_var = ops.clip(self.z_log_var_head(features), -LOG_VAR_LIMIT, LOG_VAR_LIMIT)
        return self.backbone.code_head(features), z_log_var

    def decode_logits(self, z, training=False):
        return self.backbone.decode_logits(z, training=training)

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
        return self.reconstruction_error(target, logits), losses.kl_divergence(z_mean, z_log_var, per_dimension)

    def reconstruction_error(self, target, logits):
        """-log p(x | z) per example (up to a constant), summed over features."""
        return losses.reconstruction_error(target, logits, self.reconstruction_loss, self.backbone.output_layer)

    def _noise(self, batch_size, stream, samples=1):
        # Stateless draws keyed by (seed, step, stream, replica): restored exactly on resume.
        shape = (batch_size, self.latent_dim) if samples == 1 else (samples, batch_size, self.latent_dim)
        if on_jax():
            return self._jax_noise(shape, stream)
        tf = import_tensorflow("the VAE's training noise")
        step = ops.cast(self.optimizer.iterations, "int64")
        seed = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(self.seed, "int64"), step]), stream)
        replica = tf.distribute.get_replica_context()
        if replica is not None:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
        return tf.random.stateless_normal(shape, seed=seed)

    def importance_weighted_bound(self, x, target, eps, training=False):
        """(log-weights, reconstruction, kl) per example for the draws z_k = mu + sigma * eps[k]
        (eps: (samples, batch, latent_dim)): the IWAE bound is logmeanexp over k of the log-weights
        log p(x | z_k) + kl_weight * (log p(z_k) - log q(z_k | x)), with the current KL weight."""
        z_mean, z_log_var = self.encode_distribution(x, training=training)
        samples = eps.shape[0]
        z = reparameterize(z_mean[None], z_log_var[None], eps)  # (k, batch, latent_dim)
        logits = self.decode_logits(ops.reshape(z, (-1, self.latent_dim)), training=training)
        targets = ops.tile(target, (samples,) + (1,) * (len(target.shape) - 1))
        reconstruction = ops.reshape(self.reconstruction_error(targets, logits), (samples, -1))
        log_ratio = ops.sum(gaussian_log_density(z, z_mean[None], z_log_var[None]) - gaussian_log_density(z, 0.0, 0.0), axis=-1)
        log_weights = -reconstruction - self.kl_weight(self.optimizer.iterations) * log_ratio
        bound = ops.logsumexp(log_weights, axis=0) - math.log(samples)
        return bound, ops.mean(reconstruction, axis=0), losses.kl_divergence(z_mean, z_log_var)

    def _jax_noise(self, shape, stream):
        import jax

        key = jax.random.fold_in(jax.random.key(self.seed), ops.cast(self.optimizer.iterations, "uint32"))
        return jax.random.normal(jax.random.fold_in(key, stream), shape, "float32")

    def step_losses(self, data, training):
        """(loss, reconstruction, KL, total correlation or None, batch size) of a batch."""
        x, target = self.unpack(data)
        batch_size = ops.shape(x)[0]
        if self.bound == "iwae":
            bound, reconstruction, kl = self.importance_weighted_bound(
                x, target, self._noise(batch_size, int(training), self.samples), training)
            return -ops.mean(bound), ops.mean(reconstruction), ops.mean(kl), None, batch_size
        z_mean, z_log_var = self.encode_distribution(x, training=training)
        z = reparameterize(z_mean, z_log_var, self._noise(batch_size, int(training)))
        reconstruction = ops.mean(self.reconstruction_error(target, self.decode_logits(z, training=training)))
        kl = ops.mean(losses.kl_divergence(z_mean, z_log_var, per_dimension=True), axis=0)  # per dimension
        charged = ops.sum(ops.maximum(kl, self.free_bits)) if self.free_bits else ops.sum(kl)
        loss = reconstruction + self.kl_weight(self.optimizer.iterations) * charged
        tc = total_correlation(z, z_mean, z_log_var) if self.tc_weight else None
        if self.tc_weight:
            loss = loss + self.tc_weight * tc
        return loss, reconstruction, ops.sum(kl), tc, batch_size

    def make_test_function(self, force=False):
        # A jitted JAX test step reads the optimizer's step count (the KL warm-up's weight) as of
        # when it was traced: during a warm-up, trace it anew for each evaluation.
        return super().make_test_function(force=force or (on_jax() and self.kl_warmup_steps > 0))

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]
        return trackers + ([self.tc_tracker] if self.tc_tracker is not None else [])

    def get_config(self):
        config = super().get_config()
        return {**config, "dtype": quantized_dtype(self) or config["dtype"]}

    def type_config(self):
        return {
            "beta": self.beta,
            "kl_warmup_steps": self.kl_warmup_steps,
            "free_bits": self.free_bits,
            **super().type_config(),
            "bound": self.bound,
            "samples": self.samples,
            "tc_weight": self.tc_weight,
        }


def check_bound(bound, samples, tc_weight, free_bits):
    """(bound, samples, tc_weight) checked: samples >= 1 only with the IWAE bound, which takes no
    free bits or TC weight (both are terms of the ELBO's decomposition)."""
    if bound not in BOUNDS:
        raise unknown_name("VAE bound", bound, BOUNDS)
    if bound == "elbo":
        if samples is not None:
            raise ZooError(f"samples={samples!r} needs bound='iwae'; drop samples or set bound='iwae'")
    else:
        samples = whole_number("samples", 5 if samples is None else samples)
        if float(free_bits) or float(tc_weight):
            raise ZooError("free_bits and tc_weight apply to bound='elbo'; drop them or use bound='elbo'")
    if float(tc_weight) < 0:
        raise ZooError(f"tc_weight must be >= 0, got {tc_weight}")
    return bound, samples, float(tc_weight)
