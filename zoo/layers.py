"""Layers shared by the model families: learned positions, a Transformer block, pad/crop helpers."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding per position to a (batch, length, width) sequence.

    Example:
        >>> tokens = PositionEmbedding(sequence_length=49)(tokens)  # same shape, positions added
    """

    def __init__(self, sequence_length, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=(self.sequence_length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="positions",
        )

    def call(self, inputs):
        return inputs + ops.cast(self.positions, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length}


@keras.saving.register_keras_serializable(package="zoo")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm self-attention block: x + MHA(LN(x)), then x + FFN(LN(x)).

    Args:
        num_heads: attention heads; the model width is the input's last axis.
        ff_dim: width of the feed-forward hidden layer.

    Example:
        >>> y = TransformerBlock(num_heads=4, ff_dim=128)(x)  # x: (n, T, 64) -> (n, T, 64)
    """

    def __init__(self, num_heads, ff_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.ff_dim = num_heads, ff_dim

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads={self.num_heads}")
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, width // self.num_heads, dtype=policy, name="attention"
        )
        self.ff_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="ff_norm")
        self.ff_hidden = keras.layers.Dense(self.ff_dim, activation="gelu", dtype=policy, name="ff_hidden")
        self.ff_out = keras.layers.Dense(width, dtype=policy, name="ff_out")
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.ff_norm.build(input_shape)
        self.ff_hidden.build(input_shape)
        self.ff_out.build((*input_shape[:-1], self.ff_dim))

    def call(self, x):
        normed = self.attention_norm(x)
        x = x + self.attention(normed, normed)
        return x + self.ff_out(self.ff_hidden(self.ff_norm(x)))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "ff_dim": self.ff_dim}


def padding_to_multiple(size, multiple):
    """(before, after) zero padding that makes `size` a multiple of `multiple`, split evenly."""
    extra = -size % multiple
    return extra // 2, extra - extra // 2


def pad_crop_2d(height, width, multiple, dtype):
    """Layers that pad an image to multiples of `multiple` and crop a result back to (height, width).

    Strided encoders need sizes divisible by their total stride; padding in and cropping out
    keeps any H, W working with the output the same size as the input.
    """
    pads = (padding_to_multiple(height, multiple), padding_to_multiple(width, multiple))
    if not any(sum(p) for p in pads):
        return None, None
    return keras.layers.ZeroPadding2D(pads, dtype=dtype), keras.layers.Cropping2D(pads, dtype=dtype)


def auto_width(input_size, latent_dim, fraction=0.5):
    """A hidden width between input size K and code size M (geometric: K**(1-f) * M**f), so K > N > M."""
    return max(latent_dim + 1, round(input_size ** (1 - fraction) * latent_dim**fraction))
