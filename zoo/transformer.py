"""Transformer autoencoder: self-attention over time steps (T, F) or image patches (H, W, C).

Encoder: tokens + learned positions -> attention blocks -> mean-pooled features -> code.
Decoder: the code, repeated per token and given positions -> attention blocks -> tokens -> output.
"""

import math

import keras

from zoo.autoencoder import Autoencoder, check_hidden_widths, whole_number
from zoo.convolution import Conv2DTranspose
from zoo.errors import ZooError
from zoo.layers import PositionEmbedding, TransformerBlock, float32_policy, pad_crop_2d
from zoo.registry import register_model


def _blocks(h, num_layers, num_heads, ff_dim, activation, dtype, prefix):
    for i in range(num_layers):
        h = TransformerBlock(num_heads, ff_dim, activation, dtype=dtype, name=f"{prefix}block_{i}")(h)
    return keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype, name=f"{prefix}final_norm")(h)


def transformer_networks(
    input_shape, latent_dim, embed_dim, num_heads, num_layers, ff_dim, patch_size, dtype, activation="gelu"
):
    """(trunk, decoder) for `TransformerAutoencoder`; images are cut into patch_size x patch_size tokens."""
    inputs = keras.Input(input_shape)
    if len(input_shape) == 3:
        height, width, channels = input_shape
        pad, crop = pad_crop_2d(height, width, patch_size, dtype)
        grid = (math.ceil(height / patch_size), math.ceil(width / patch_size))
        # A strided convolution with kernel = stride = patch is the patch embedding (ViT).
        h = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, dtype=dtype, name="patch_embed")(
            pad(inputs) if pad else inputs
        )
        h = keras.layers.Reshape((math.prod(grid), embed_dim), dtype=dtype)(h)
    else:
        h = keras.layers.Dense(embed_dim, dtype=dtype, name="step_embed")(inputs)
    tokens = h.shape[1]
    h = PositionEmbedding(tokens, dtype=dtype, name="positions")(h)
    h = _blocks(h, num_layers, num_heads, ff_dim, activation, dtype, prefix="")
    h = keras.layers.GlobalAveragePooling1D(dtype=dtype)(h)
    trunk = keras.Model(inputs, h, name="encoder_trunk")

    codes = keras.Input((latent_dim,))
    h = keras.layers.Dense(embed_dim, dtype=dtype, name="expand")(codes)
    h = keras.layers.RepeatVector(tokens, dtype=dtype)(h)
    h = PositionEmbedding(tokens, dtype=dtype, name="decoder_positions")(h)
    h = _blocks(h, num_layers, num_heads, ff_dim, activation, dtype, prefix="decoder_")
    if len(input_shape) == 3:
        h = keras.layers.Reshape((*grid, embed_dim), dtype=dtype)(h)
        logits = Conv2DTranspose(
            channels, patch_size, strides=patch_size, dtype=float32_policy(dtype), name="logits"
        )(h)
        if crop:
            logits = crop(logits)
    else:
        logits = keras.layers.Dense(input_shape[-1], dtype=float32_policy(dtype), name="logits")(h)
    return trunk, keras.Model(codes, logits, name="decoder")


@register_model("transformer_ae")
class TransformerAutoencoder(Autoencoder):
    """Self-attention autoencoder for sequences (T, F) or images (H, W, C) as patches.

    Args:
        input_shape: (time_steps, features) or (height, width, channels).
        latent_dim: code width M.
        embed_dim: token width; the pooled features (N) have this width.
        num_heads: attention heads (must divide embed_dim).
        num_layers: attention blocks in the encoder and in the decoder.
        ff_dim: feed-forward width inside each block.
        patch_size: side of the square image patches (ignored for sequences).
        output_activation: "sigmoid" (data in [0, 1]) or "linear".
        activation: the blocks' feed-forward activation: "gelu" or "relu" (TensorFlow Lite Micro
            has no GELU kernel; a ReLU model exports for microcontrollers).

    Example:
        >>> model = zoo.create("transformer_ae", input_shape=(28, 28, 1), latent_dim=16, patch_size=4)
        >>> model(x).shape == x.shape
    """

    input_rank = (2, 3)

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        embed_dim=64,
        num_heads=4,
        num_layers=2,
        ff_dim=128,
        patch_size=4,
        output_activation="sigmoid",
        activation="gelu",
        **kwargs,
    ):
        super().__init__(input_shape, latent_dim, output_activation, **kwargs)
        self.embed_dim, self.num_heads, self.num_layers, self.ff_dim, self.patch_size = (
            whole_number(option, value)
            for option, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_layers", num_layers),
                                  ("ff_dim", ff_dim), ("patch_size", patch_size))
        )
        self.activation = activation
        check_hidden_widths([self.embed_dim], self.input_size, self.latent_dim, "embed_dim")
        if self.embed_dim % self.num_heads:
            raise ZooError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        self._attach(
            *transformer_networks(
                self.data_shape,
                self.latent_dim,
                self.embed_dim,
                self.num_heads,
                self.num_layers,
                self.ff_dim,
                self.patch_size,
                self.dtype_policy,
                self.activation,
            )
        )

    def family_config(self):
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "ff_dim": self.ff_dim,
            "patch_size": self.patch_size,
            "activation": self.activation,
        }
