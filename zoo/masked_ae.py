"""Masked autoencoder (He et al. 2022) on the zoo's Transformer networks.

Each training step hides a random `mask_ratio` share of every example's patches (image patches of
the backbone's patch_size, or time steps of a sequence) and trains the network to reconstruct
them: the error counts on the hidden patches only. The hidden patches are blanked (zeroed) in the
input, so the backbone's encoder runs unchanged on every token position. `encode` and `call`
read the whole input: no masking at inference.
"""

import math

import keras
import numpy as np
from keras import ops

from zoo import losses
from zoo.autoencoder import build_backbone
from zoo.errors import ZooError
from zoo.layers import objective_test_step, objective_train_step
from zoo.registry import register_model

BACKBONES = ("transformer",)


@register_model("masked_ae")
class MaskedAutoencoder(keras.Model):
    """Masked autoencoder: reconstructs randomly hidden patches; `encode` gives codes of whole inputs.

    Args:
        input_shape: (height, width, channels) images or (time_steps, features) sequences.
        latent_dim: width M of the code.
        backbone: "transformer" (the family whose tokens are the patches).
        backbone_config: the transformer_ae's options, e.g. {"patch_size": 4, "embed_dim": 64}.
        mask_ratio: share of the patches hidden in each training example, in (0, 1).
        reconstruction_loss: "bce" (from logits, data in [0, 1]) or "mse" (squared error), summed
            over the hidden patches' values.
        seed: seed of the masks.

    Example:
        >>> mae = zoo.create("masked_ae", input_shape=(28, 28, 1), latent_dim=16, backbone_config={"patch_size": 4})
        >>> mae.compile(keras.optimizers.Adam(1e-3)); mae.fit(x, epochs=10)  # logs loss (hidden patches only)
        >>> codes = mae.encode(x)
    """

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        backbone="transformer",
        backbone_config=None,
        mask_ratio=0.75,
        reconstruction_loss="bce",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone_config = dict(backbone_config or {})
        losses.check_reconstruction_error("masked_ae", reconstruction_loss, backbone_config.get("output_activation", "sigmoid"))
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
            raise ZooError(f"mask_ratio must lie strictly between 0 and 1 (the share of patches hidden), got {mask_ratio!r}")
        self.backbone = build_backbone("masked_ae", backbone, backbone_config, input_shape, latent_dim, self.dtype_policy, BACKBONES)
        self.data_shape, self.latent_dim = self.backbone.data_shape, self.backbone.latent_dim
        self.backbone_name, self.reconstruction_loss = backbone, reconstruction_loss
        self.mask_ratio = float(mask_ratio)
        patch = self.backbone.patch_size if len(self.data_shape) == 3 else 1
        self.patch_grid = tuple(math.ceil(side / patch) for side in self.data_shape[:-1])
        self.patch_shape = (patch,) * len(self.patch_grid)
        patches = math.prod(self.patch_grid)
        self.masked_patches = min(patches - 1, max(1, round(self.mask_ratio * patches)))
        self.seed = int(np.random.randint(2**31 - 1) if seed is None else seed)
        self.mask_seed = keras.random.SeedGenerator(self.seed, name="mask_seed")
        self.trackers = [keras.metrics.Mean(name="loss")]
        self.built = True

    # --- the model -------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        self.backbone.check_input(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def check_input(self, x, shape=None, what="inputs"):
        self.backbone.check_input(x, shape, what)

    def encode(self, x, training=False):
        """Codes of the whole (unmasked) inputs, float32 of shape (batch, latent_dim)."""
        return self.backbone.encode(x, training=training)

    def decode(self, z, training=False):
        """Reconstructions from codes of shape (batch, latent_dim)."""
        return self.backbone.decode(z, training=training)

    def call(self, x, training=False):
        return self.backbone.call(x, training=training)

    @property
    def encoder(self):
        """x -> code as a functional model sharing this model's weights."""
        return self.backbone.encoder

    # --- the objective ---------------------------------------------------------------------
    def random_mask(self, batch_size, seed=None):
        """float32 masks of shape (batch, *input_shape[:-1], 1): 1 on the `masked_patches` patches
        hidden in each example (chosen uniformly at random), 0 elsewhere."""
        noise = keras.random.uniform((batch_size, math.prod(self.patch_grid)), seed=self.mask_seed if seed is None else seed)
        ranks = ops.argsort(ops.argsort(noise, axis=-1), axis=-1)
        mask = ops.reshape(ops.cast(ranks < self.masked_patches, "float32"), (-1, *self.patch_grid))
        for axis, size in enumerate(self.patch_shape, start=1):
            mask = ops.repeat(mask, size, axis=axis)
        if len(self.patch_grid) == 2:  # patches that overhang the image (it is padded) are cropped
            mask = mask[:, : self.data_shape[0], : self.data_shape[1]]
        return mask[..., None]

    def masked_loss(self, x, target, mask, training=False):
        """Batch mean of the reconstruction error summed over the values `mask` hides, from the
        input with those values blanked."""
        x = ops.cast(x, "float32")
        logits = self.backbone.decode_logits(self.backbone.encode(x * (1 - mask), training=training), training=training)
        target = ops.cast(target, "float32")
        if self.reconstruction_loss == "bce":
            errors = ops.binary_crossentropy(target, logits, from_logits=True)
        else:
            errors = ops.square(target - self.backbone.output_layer(logits))
        hidden = ops.broadcast_to(mask, ops.shape(errors))
        return ops.mean(ops.sum(ops.reshape(errors * hidden, (ops.shape(x)[0], -1)), axis=-1))

    def _step_loss(self, data, training):
        x, target, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ZooError("the masked_ae does not take sample weights; pass (x,) or (x, target)")
        target = x if target is None else target
        return self.masked_loss(x, target, self.random_mask(ops.shape(x)[0]), training), ops.shape(x)[0]

    def _track(self, loss, batch_size):
        self.trackers[0].update_state(loss, sample_weight=ops.cast(batch_size, "float32"))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX.
        return objective_train_step(self, step_input, lambda data: self._step_loss(data, training=True), self._track)

    def test_step(self, *step_input):
        return objective_test_step(self, step_input, lambda data: self._step_loss(data, training=False), self._track)

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
            "mask_ratio": self.mask_ratio,
            "reconstruction_loss": self.reconstruction_loss,
            "seed": self.seed,
        }
