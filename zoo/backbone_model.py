"""The base of the model types built over a backbone network: VAE, CVAE, VQ-VAE, WAE, AAE, masked AE.

A type trains one family's autoencoder (`<backbone>_ae`, held as `backbone`) with its own
objective and passes to it what it does not change: input checks, `encode`, `decode`, `call`
and the backbone's part of the config. Where the type's code is the backbone's, `CodeModel`
adds the `encoder` model; where that code follows the prior N(0, I), `PriorModel` adds `sample`.
A type creates its own layers after the backbone, so the weight paths of saved models and
presets stay valid.
"""

import keras
import numpy as np
from keras import ops

from zoo import losses
from zoo.autoencoder import build_backbone
from zoo.errors import ZooError
from zoo.layers import OptimizerBuiltAtCompile, objective_test_step, objective_train_step
from zoo.presets import PresetMixin

BACKBONES = ("dense", "conv", "lstm", "transformer")


def prior_draws(n, latent_dim, seed=None):
    """`n` draws of the prior N(0, I), float32 of shape (n, latent_dim); the same seed gives the same draws."""
    return np.random.default_rng(seed).standard_normal((int(n), latent_dim)).astype("float32")


def random_seed(seed):
    """`seed` as an int, or a fresh random one for None (the config records it, so a run repeats)."""
    return int(np.random.randint(2**31 - 1) if seed is None else seed)


class BackboneModel(PresetMixin, OptimizerBuiltAtCompile, keras.Model):
    """A model type over a backbone network (see the module). A subclass builds the backbone with
    `attach_backbone`, keeps a `trackers` list of its metrics, returns `(loss, *more, batch_size)`
    from `step_losses(data, training)` (what the default `train_step` and `test_step` minimise and
    log) and its options beyond the backbone's from `type_config`."""

    type_name = ""  # how messages name the type
    backbones = BACKBONES

    def checked_backbone_config(self, backbone_config, reconstruction_loss):
        """A copy of `backbone_config` ({} for None), once `reconstruction_loss` is known to suit its output."""
        backbone_config = dict(backbone_config or {})
        output_activation = backbone_config.get("output_activation", "sigmoid")
        losses.check_reconstruction_error(self.type_name, reconstruction_loss, output_activation)
        return backbone_config

    def attach_backbone(self, backbone, backbone_config, input_shape, latent_dim, reconstruction_loss, seed):
        """Builds the `backbone` family's network with a code of width `latent_dim` as `self.backbone`
        and records what the config needs: the input shape, code width, family, loss and seed."""
        self.backbone = build_backbone(
            self.type_name, backbone, backbone_config, input_shape, latent_dim, self.dtype_policy, self.backbones
        )
        self.data_shape, self.latent_dim = self.backbone.data_shape, self.backbone.latent_dim
        self.backbone_name, self.reconstruction_loss = backbone, reconstruction_loss
        self.seed = random_seed(seed)

    # --- the model -------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        self.check_input(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def check_input(self, x, shape=None, what="inputs"):
        self.backbone.check_input(x, shape, what)

    def encode(self, x, training=False):
        """Codes, float32 of shape (batch, latent_dim)."""
        return self.backbone.encode(x, training=training)

    def decode(self, z, training=False):
        """Reconstructions (the decoder's mean) from codes of shape (batch, latent_dim)."""
        return self.backbone.decode(z, training=training)

    def call(self, x, training=False):
        return self.backbone.call(x, training=training)

    # --- the objective ---------------------------------------------------------------------
    def unpack(self, data):
        """(x, target) of a batch, target x unless given; sample weights are refused."""
        x, target, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ZooError(f"the {self.type_name} does not take sample weights; pass (x,) or (x, target)")
        return x, x if target is None else target

    def track(self, *values):
        """Updates the metrics with a batch's `(*values, batch_size)`, each value weighted by the batch
        size (per-example epoch means, partial batches included), and returns the logs."""
        *values, batch_size = values
        weight = ops.cast(batch_size, "float32")
        for tracker, value in zip(self.metrics, values):
            tracker.update_state(value, sample_weight=weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX.
        return objective_train_step(self, step_input, lambda data: self.step_losses(data, training=True), self.track)

    def test_step(self, *step_input):
        return objective_test_step(self, step_input, lambda data: self.step_losses(data, training=False), self.track)

    @property
    def metrics(self):
        return list(self.trackers)

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            **self.code_config(),
            "backbone": self.backbone_name,
            "backbone_config": self.backbone.backbone_config(),
            **self.type_config(),
        }

    def code_config(self):
        """Options that shape the code beyond latent_dim (the config lists them before the backbone)."""
        return {}

    def type_config(self):
        """The type's own options: its objective's, the reconstruction loss and the seed."""
        return {"reconstruction_loss": self.reconstruction_loss, "seed": self.seed}


class CodeModel(BackboneModel):
    """A `BackboneModel` whose code is the backbone's (not labelled or quantised): `encoder` gives it."""

    @property
    def encoder(self):
        """x -> code as a functional model sharing this model's weights."""
        return self.backbone.encoder


class PriorModel(CodeModel):
    """A `CodeModel` whose codes are trained to follow the prior N(0, I), so decoded prior draws are samples."""

    def sample(self, n, seed=None):
        """Decodes `n` draws of the prior N(0, I); the same seed gives the same samples."""
        return self.decode(prior_draws(n, self.latent_dim, seed))
