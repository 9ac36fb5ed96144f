"""Masked autoencoder (He et al. 2022) on the zoo's Transformer networks.

Each training step hides a random `mask_ratio` share of every example's patches (image patches of
the backbone's patch_size, or time steps of a sequence) and trains the network to reconstruct
them: the error counts on the hidden patches only. The hidden patches are blanked (zeroed) in the
input, so the backbone's encoder runs unchanged on every token position. `encode` and `call`
read the whole input: no masking at inference.
"""

import math

import keras
from keras import ops

from zoo.backbone_model import CodeModel
from zoo.errors import ZooError
from zoo.registry import register_model


@register_model("masked_ae")
class MaskedAutoencoder(CodeModel):
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

    type_name = "masked_ae"
    backbones = ("transformer",)

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
        backbone_config = self.checked_backbone_config(backbone_config, reconstruction_loss)
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
            raise ZooError(f"mask_ratio must lie strictly between 0 and 1 (the share of patches hidden), got {mask_ratio!r}")
        self.attach_backbone(backbone, backbone_config, input_shape, latent_dim, reconstruction_loss, seed)
        self.mask_ratio = float(mask_ratio)
        patch = self.backbone.patch_size if len(self.data_shape) == 3 else 1
        self.patch_grid = tuple(math.ceil(side / patch) for side in self.data_shape[:-1])
        self.patch_shape = (patch,) * len(self.patch_grid)
        patches = math.prod(self.patch_grid)
        self.masked_patches = min(patches - 1, max(1, round(self.mask_ratio * patches)))
        self.mask_seed = keras.random.SeedGenerator(self.seed, name="mask_seed")
        self.trackers = [keras.metrics.Mean(name="loss")]
        self.built = True

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

    def step_losses(self, data, training):
        """(loss, batch size) of a batch under a fresh random mask."""
        x, target = self.unpack(data)
        return self.masked_loss(x, target, self.random_mask(ops.shape(x)[0]), training), ops.shape(x)[0]

    def type_config(self):
        return {"mask_ratio": self.mask_ratio, **super().type_config()}
