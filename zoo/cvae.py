"""Conditional variational autoencoder (Sohn et al. 2015) on any zoo family's networks.

Class labels, one-hot, enter both networks: the encoder's heads read the trunk's features
concatenated with the label, q(z | x, y); the decoder reads the code concatenated with it,
p(x | z, y). The backbone is built with a code of width latent_dim + num_classes for that
decoder input. `sample(n, labels)` draws z ~ N(0, I) and decodes it as the given classes.
"""

import keras
import numpy as np
from keras import ops

from zoo import losses
from zoo.autoencoder import whole_number
from zoo.backbone_model import BackboneModel, prior_draws
from zoo.errors import ZooError
from zoo.registry import register_model
from zoo.vae import LOG_VAR_LIMIT, reparameterize


@register_model("cvae")
class CVAE(BackboneModel):
    """Conditional VAE: every method takes class labels (ints in [0, num_classes) or one-hot rows).

    Args:
        input_shape: one example's shape, without the batch axis.
        latent_dim: width M of z.
        num_classes: how many classes the labels name.
        backbone: family providing the networks: "dense", "conv" (with its default dense code),
            "lstm" or "transformer".
        backbone_config: that family's options (see its class), e.g. {"filters": [32, 64]}.
        beta: weight of the KL term (1 is the conditional ELBO).
        reconstruction_loss: "bce" (from logits, data in [0, 1]) or "mse" (squared error summed).
        seed: seed of the training noise.

    Example:
        >>> cvae = zoo.create("cvae", input_shape=(28, 28, 1), latent_dim=2, num_classes=10, backbone="conv")
        >>> cvae.compile(keras.optimizers.Adam(1e-3)); cvae.fit(x, labels, epochs=10)
        >>> sevens = cvae.sample(16, labels=7, seed=0)
    """

    type_name = "cvae"

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        num_classes=10,
        backbone="conv",
        backbone_config=None,
        beta=1.0,
        reconstruction_loss="bce",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone_config = self.checked_backbone_config(backbone_config, reconstruction_loss)
        if backbone_config.get("code", "dense") != "dense":
            raise ZooError("the cvae joins the labels to a dense code; drop code='spatial' from backbone_config")
        self.num_classes = whole_number("num_classes", num_classes, minimum=2)
        latent_dim = whole_number("latent_dim", latent_dim)
        if float(beta) < 0:
            raise ZooError(f"beta must be >= 0, got {beta}")
        self.attach_backbone(backbone, backbone_config, input_shape, latent_dim + self.num_classes, reconstruction_loss, seed)
        self.latent_dim, self.beta = latent_dim, float(beta)  # the backbone's code also holds the label

        # These heads read the labels too; the backbone's own code head is left out of training.
        self.backbone.code_head.trainable = False
        features = self.backbone.encoder_trunk.output.shape[-1] + self.num_classes
        self.z_mean_head = keras.layers.Dense(self.latent_dim, dtype="float32", name="z_mean")
        self.z_log_var_head = keras.layers.Dense(self.latent_dim, dtype="float32", name="z_log_var")
        for head in (self.z_mean_head, self.z_log_var_head):
            head.build((None, features))
        self.noise_seed = keras.random.SeedGenerator(self.seed, name="noise_seed")
        self.trackers = [keras.metrics.Mean(name=name) for name in ("loss", "reconstruction_loss", "kl_loss")]
        self.built = True

    # --- labels ----------------------------------------------------------------------------
    def one_hot(self, labels, batch_size=None):
        """float32 one-hot rows (batch, num_classes) from class ids or one-hot rows; a ZooError for
        missing labels or ids outside [0, num_classes)."""
        if labels is None:
            raise ZooError(f"the cvae needs class labels: pass labels (ints in [0, {self.num_classes})) with x")
        if isinstance(labels, (int, np.integer)) and batch_size is not None:
            labels = np.full((batch_size,), labels)
        if isinstance(labels, (list, tuple, np.ndarray, int, np.integer)):
            labels = np.asarray(labels)
            self.check_labels(labels)
        if len(labels.shape) == 2 and labels.shape[-1] == self.num_classes:
            return ops.cast(labels, "float32")
        return ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, dtype="float32")

    def check_labels(self, labels):
        """Refuses class ids outside [0, num_classes) and one-hot rows of another width (numpy labels)."""
        if labels.ndim == 2 and labels.shape[-1] != 1:
            if labels.shape[-1] != self.num_classes:
                raise ZooError(f"one-hot labels must have num_classes={self.num_classes} columns, got {labels.shape[-1]}")
            return
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes or np.any(labels != np.round(labels))):
            raise ZooError(
                f"labels must be class ids in [0, {self.num_classes}), got values from {labels.min()} to {labels.max()}; "
                "create the cvae with more num_classes or relabel the data"
            )

    # --- the model -------------------------------------------------------------------------
    def check_input(self, inputs):
        """Refuses inputs other than (x, labels) pairs with x of the model's input shape."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ZooError("the cvae is called on (x, labels); labels are ints in [0, num_classes) or one-hot rows")
        self.backbone.check_input(inputs[0])

    def encode_distribution(self, x, labels, training=False):
        """(z_mean, z_log_var) of q(z | x, y), both float32 of shape (batch, latent_dim)."""
        self.backbone.check_input(x)
        features = self.backbone.features(x, training=training)
        y = ops.cast(self.one_hot(labels, x.shape[0]), features.dtype)
        h = ops.concatenate([features, y], axis=-1)
        return self.z_mean_head(h), ops.clip(self.z_log_var_head(h), -LOG_VAR_LIMIT, LOG_VAR_LIMIT)

    def encode(self, x, labels, training=False):
        """The mean code z_mean, shape (batch, latent_dim)."""
        return self.encode_distribution(x, labels, training)[0]

    def decode_logits(self, z, labels, training=False):
        z = ops.cast(z, "float32")
        return self.backbone.decode_logits(ops.concatenate([z, self.one_hot(labels, z.shape[0])], axis=-1), training)

    def decode(self, z, labels, training=False):
        """Reconstructions (the decoder's mean) of class `labels` from codes of shape (batch, latent_dim)."""
        self.backbone.check_input(z, (self.latent_dim,), what="codes")
        return self.backbone.output_layer(self.decode_logits(z, labels, training))

    def call(self, inputs, training=False):
        x, labels = inputs
        return self.backbone.output_layer(self.decode_logits(self.encode(x, labels, training), labels, training))

    def sample(self, n, labels=None, seed=None):
        """Decodes `n` draws z ~ N(0, I) as class `labels` (one id for all, or one per sample)."""
        y = self.one_hot(labels, int(n))
        return self.decode(prior_draws(n, self.latent_dim, seed), y)

    # --- the objective ---------------------------------------------------------------------
    def step_losses(self, data, training):
        x, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ZooError("the cvae does not take sample weights; pass (x, labels)")
        z_mean, z_log_var = self.encode_distribution(x, labels, training)
        eps = keras.random.normal(ops.shape(z_mean), seed=self.noise_seed)
        logits = self.decode_logits(reparameterize(z_mean, z_log_var, eps), labels, training)
        reconstruction = ops.mean(losses.reconstruction_error(x, logits, self.reconstruction_loss, self.backbone.output_layer))
        kl = ops.mean(losses.kl_divergence(z_mean, z_log_var))
        return reconstruction + self.beta * kl, reconstruction, kl, ops.shape(x)[0]

    def fit(self, x=None, y=None, *args, **kwargs):
        """`fit(x, labels)`; labels as in `sample` (a tf.data set yields (x, labels) pairs)."""
        if y is not None or isinstance(x, np.ndarray):
            self.one_hot(y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if y is not None or isinstance(x, np.ndarray):
            self.one_hot(y)
        return super().evaluate(x, y, *args, **kwargs)

    def code_config(self):
        return {"num_classes": self.num_classes}

    def type_config(self):
        return {"beta": self.beta, **super().type_config()}
