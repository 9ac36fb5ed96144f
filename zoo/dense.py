"""Fully connected autoencoder: flatten -> MLP (K > N > M) -> code -> mirrored MLP -> reshape."""

import math

import keras

from zoo.autoencoder import Autoencoder, check_hidden_widths, whole_number, whole_numbers
from zoo.layers import auto_width, float32_policy
from zoo.registry import register_model


def dense_networks(input_shape, latent_dim, hidden_units, dtype, blocks_per_stage=0):
    """(trunk, decoder) for `DenseAutoencoder`; `hidden_units` run from the input towards the code."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Flatten(dtype=dtype)(inputs)
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation="relu", dtype=dtype, name=f"hidden_{i}")(h)
        h = residual_mlp_blocks(h, blocks_per_stage, dtype, f"hidden_{i}")
    trunk = keras.Model(inputs, h, name="encoder_trunk")

    codes = keras.Input((latent_dim,))
    h = codes
    for i, units in enumerate(reversed(hidden_units)):
        h = keras.layers.Dense(units, activation="relu", dtype=dtype, name=f"decoder_hidden_{i}")(h)
        h = residual_mlp_blocks(h, blocks_per_stage, dtype, f"decoder_hidden_{i}")
    h = keras.layers.Dense(math.prod(input_shape), dtype=float32_policy(dtype), name="logits")(h)
    logits = keras.layers.Reshape(input_shape, dtype=float32_policy(dtype))(h)
    return trunk, keras.Model(codes, logits, name="decoder")


def residual_mlp_blocks(h, count, dtype, name):
    """`count` pre-norm residual blocks of the same width: h + Dense(ReLU(Dense(LayerNorm(h))))."""
    width = h.shape[-1]
    for j in range(count):
        branch = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype, name=f"{name}_block_{j}_norm")(h)
        branch = keras.layers.Dense(width, activation="relu", dtype=dtype, name=f"{name}_block_{j}_a")(branch)
        branch = keras.layers.Dense(width, dtype=dtype, name=f"{name}_block_{j}_b")(branch)
        h = keras.layers.Add(dtype=dtype, name=f"{name}_block_{j}_add")([h, branch])
    return h


@register_model("dense_ae")
class DenseAutoencoder(Autoencoder):
    """MLP autoencoder for inputs of any shape (flattened inside).

    Args:
        input_shape: one example's shape, e.g. (28, 28, 1) or (64,).
        latent_dim: code width M.
        hidden_units: encoder widths from input to code, each between M and K (one number: one layer); default two
            widths spaced geometrically between K and M.
        output_activation: "sigmoid" (data in [0, 1]) or "linear".
        blocks_per_stage: pre-norm residual MLP blocks (LayerNorm, two Dense layers, a skip)
            after each hidden layer of the encoder and the decoder; 0: the plain MLP.

    Example:
        >>> model = zoo.create("dense_ae", input_shape=(28, 28, 1), latent_dim=16)
        >>> model.compile("adam", loss="mse"); model.fit(x, x, epochs=5)
    """

    def __init__(
        self, input_shape, latent_dim=16, hidden_units=None, output_activation="sigmoid", blocks_per_stage=0, **kwargs
    ):
        super().__init__(input_shape, latent_dim, output_activation, **kwargs)
        if hidden_units is None:
            hidden_units = [auto_width(self.input_size, self.latent_dim, f) for f in (1 / 3, 2 / 3)]
        self.hidden_units = whole_numbers("hidden_units", hidden_units, "[256, 64]")
        check_hidden_widths(self.hidden_units, self.input_size, self.latent_dim, "hidden_units")
        self.blocks_per_stage = whole_number("blocks_per_stage", blocks_per_stage, minimum=0)
        self._attach(
            *dense_networks(self.data_shape, self.latent_dim, self.hidden_units, self.dtype_policy, self.blocks_per_stage)
        )

    def family_config(self):
        return {"hidden_units": list(self.hidden_units), "blocks_per_stage": self.blocks_per_stage}
