"""Adversarial autoencoder (Makhzani et al. 2016) on any zoo family's networks.

The backbone's encoder is also the generator of a GAN played in code space: a discriminator
learns to tell its codes from draws of the prior N(0, I), and the encoder learns to fool it, so
the codes fill the prior and `sample` can decode prior draws. Two optimizers take turns each
step: the autoencoder's (reconstruction + adversarial_weight x the generator's loss) and the
discriminator's.
"""

import keras
from keras import ops

from zoo import losses
from zoo.autoencoder import whole_numbers
from zoo.backbone_model import PriorModel
from zoo.backend import on_jax
from zoo.errors import ZooError
from zoo.layers import custom_test_step, custom_train_step
from zoo.registry import register_model


def discriminator_network(latent_dim, units, dtype):
    """Codes -> one logit (float32): "drawn from the prior" against "produced by the encoder"."""
    layers = [keras.Input((latent_dim,))]
    layers += [keras.layers.Dense(width, activation="relu", dtype=dtype, name=f"hidden_{i}") for i, width in enumerate(units)]
    layers.append(keras.layers.Dense(1, dtype="float32", name="logit"))
    return keras.Sequential(layers, name="discriminator")


def real_or_fake_loss(logits, real):
    """Per-example binary cross-entropy of discriminator `logits` against "real" (1) or "fake" (0)."""
    labels = ops.ones_like(logits) if real else ops.zeros_like(logits)
    return losses.bce(labels, logits, from_logits=True)


@register_model("aae")
class AAE(PriorModel):
    """Adversarial autoencoder: a deterministic code pushed onto N(0, I) by a discriminator.

    Args:
        input_shape: one example's shape, without the batch axis.
        latent_dim: width M of the code.
        backbone: family providing encoder and decoder: "dense", "conv", "lstm" or "transformer".
        backbone_config: that family's options (see its class), e.g. {"filters": [32, 64]}.
        discriminator_units: hidden widths of the discriminator MLP on codes.
        adversarial_weight: weight of the encoder's generator loss against the reconstruction
            error (summed over features).
        reconstruction_loss: "bce" (from logits, data in [0, 1]) or "mse" (squared error summed).
        seed: seed of the prior draws the discriminator sees.

    Example:
        >>> aae = zoo.create("aae", input_shape=(28, 28, 1), latent_dim=8, backbone="conv")
        >>> aae.compile(keras.optimizers.Adam(1e-3), discriminator_optimizer=keras.optimizers.Adam(1e-4))
        >>> aae.fit(x, epochs=10)  # logs loss, reconstruction_loss, generator_loss, discriminator_loss
        >>> images = aae.sample(16, seed=0)
    """

    type_name = "aae"

    def __init__(
        self,
        input_shape,
        latent_dim=8,
        backbone="conv",
        backbone_config=None,
        discriminator_units=(64, 64),
        adversarial_weight=1.0,
        reconstruction_loss="bce",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone_config = self.checked_backbone_config(backbone_config, reconstruction_loss)
        if float(adversarial_weight) < 0:
            raise ZooError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        self.attach_backbone(backbone, backbone_config, input_shape, latent_dim, reconstruction_loss, seed)
        self.discriminator_units = whole_numbers("discriminator_units", discriminator_units, "[64, 64]")
        self.adversarial_weight = float(adversarial_weight)

        self.discriminator = discriminator_network(self.latent_dim, self.discriminator_units, self.dtype_policy)
        self.prior_seed = keras.random.SeedGenerator(self.seed, name="prior_seed")
        self.trackers = [keras.metrics.Mean(name=name) for name in
                         ("loss", "reconstruction_loss", "generator_loss", "discriminator_loss")]
        self.built = True

    # --- the objective ---------------------------------------------------------------------
    def compile(self, optimizer="adam", discriminator_optimizer=None, **kwargs):
        """`optimizer` trains the autoencoder, `discriminator_optimizer` (default: a fresh copy of
        `optimizer`) the discriminator."""
        super().compile(optimizer=optimizer, **kwargs)
        if discriminator_optimizer is None:
            template = getattr(self.optimizer, "inner_optimizer", self.optimizer)
            discriminator_optimizer = type(template).from_config(template.get_config())
        discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
        if self.dtype_policy.name == "mixed_float16" and not isinstance(discriminator_optimizer, keras.optimizers.LossScaleOptimizer):
            discriminator_optimizer = keras.optimizers.LossScaleOptimizer(discriminator_optimizer)
        self.discriminator_optimizer = discriminator_optimizer
        self.discriminator_optimizer.build(self.discriminator.trainable_weights)

    def build_optimizer(self):
        self.optimizer.build(self.backbone.trainable_weights)  # the discriminator has its own

    def autoencoder_losses(self, x, target, training=False):
        """(loss, reconstruction, generator loss, codes): batch means, and the codes they came from."""
        codes = self.backbone.encode(x, training=training)
        logits = self.backbone.decode_logits(codes, training=training)
        reconstruction = ops.mean(losses.reconstruction_error(target, logits, self.reconstruction_loss, self.backbone.output_layer))
        generator = ops.mean(real_or_fake_loss(self.discriminator(codes, training=training), real=True))
        return reconstruction + self.adversarial_weight * generator, reconstruction, generator, codes

    def discriminator_loss(self, codes, training=False):
        """Batch mean of the discriminator's error on prior draws (real) and on `codes` (fake)."""
        prior = keras.random.normal(ops.shape(codes), seed=self.prior_seed)
        real = real_or_fake_loss(self.discriminator(prior, training=training), real=True)
        fake = real_or_fake_loss(self.discriminator(ops.stop_gradient(codes), training=training), real=False)
        return ops.mean(real + fake)

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX.
        return custom_train_step(self, step_input, self._train)

    def _train(self, data, gradient_step):
        x, target = self.unpack(data)
        loss, reconstruction, generator, codes = gradient_step(
            lambda: self.autoencoder_losses(x, target, training=True), variables=self.backbone.trainable_weights
        )
        (discriminator,) = gradient_step(
            lambda: (self.discriminator_loss(codes, training=True),), self.discriminator_optimizer,
            self.discriminator.trainable_weights,
        )
        return self.track(loss, reconstruction, generator, discriminator, ops.shape(x)[0])

    def test_step(self, *step_input):
        return custom_test_step(self, step_input, self._evaluate)

    def _evaluate(self, data):
        x, target = self.unpack(data)
        loss, reconstruction, generator, codes = self.autoencoder_losses(x, target)
        return self.track(loss, reconstruction, generator, self.discriminator_loss(codes), ops.shape(x)[0])

    @property
    def metrics_variables(self):
        # Keras' JAX trainer carries the model's variables, one optimizer's and the metrics' from
        # step to step; the discriminator's optimizer state travels with the metrics'.
        variables = super().metrics_variables
        if on_jax() and getattr(self, "discriminator_optimizer", None) is not None:
            variables += self.discriminator_optimizer.variables
        return variables

    def type_config(self):
        return {
            "discriminator_units": list(self.discriminator_units),
            "adversarial_weight": self.adversarial_weight,
            **super().type_config(),
        }
