"""Convolutional autoencoder: strided Conv2D encoder, Conv2DTranspose decoder, any H x W x C."""

import math

import keras

from zoo.autoencoder import Autoencoder, check_hidden_widths
from zoo.errors import ZooError
from zoo.layers import auto_width, pad_crop_2d
from zoo.registry import register_model


def conv_networks(input_shape, latent_dim, filters, kernel_size, hidden_units, dtype):
    """(trunk, decoder) for `ConvAutoencoder`: one stride-2 conv per entry of `filters`."""
    height, width, channels = input_shape
    stride = 2 ** len(filters)
    pad, crop = pad_crop_2d(height, width, stride, dtype)
    inner = (math.ceil(height / stride), math.ceil(width / stride), filters[-1])

    inputs = keras.Input(input_shape)
    h = pad(inputs) if pad else inputs
    for i, f in enumerate(filters):
        h = keras.layers.Conv2D(
            f, kernel_size, strides=2, padding="same", activation="relu", dtype=dtype, name=f"conv_{i}"
        )(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(hidden_units, activation="relu", dtype=dtype, name="hidden")(h)
    trunk = keras.Model(inputs, h, name="encoder_trunk")

    codes = keras.Input((latent_dim,))
    h = keras.layers.Dense(hidden_units, activation="relu", dtype=dtype, name="decoder_hidden")(codes)
    h = keras.layers.Dense(math.prod(inner), activation="relu", dtype=dtype, name="expand")(h)
    h = keras.layers.Reshape(inner, dtype=dtype)(h)
    for i, f in enumerate(reversed(filters)):
        h = keras.layers.Conv2DTranspose(
            f, kernel_size, strides=2, padding="same", activation="relu", dtype=dtype, name=f"deconv_{i}"
        )(h)
    logits = keras.layers.Conv2D(channels, kernel_size, padding="same", dtype="float32", name="logits")(h)
    if crop:
        logits = crop(logits)
    return trunk, keras.Model(codes, logits, name="decoder")


@register_model("conv_ae")
class ConvAutoencoder(Autoencoder):
    """Convolutional autoencoder for images of any size (padded in, cropped back out).

    Args:
        input_shape: (height, width, channels).
        latent_dim: code width M.
        filters: channels of the stride-2 convolutions, input side first.
        kernel_size: convolution kernel size.
        hidden_units: dense width N between the convolutions and the code (default between K and M).
        output_activation: "sigmoid" (data in [0, 1]) or "linear".

    Example:
        >>> model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64))
        >>> model.encode(x).shape  # (n, 16)
    """

    input_rank = 3

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        filters=(32, 64),
        kernel_size=3,
        hidden_units=None,
        output_activation="sigmoid",
        **kwargs,
    ):
        super().__init__(input_shape, latent_dim, output_activation, **kwargs)
        self.filters = [int(f) for f in filters]
        if not self.filters:
            raise ZooError("filters must list at least one convolution width, e.g. filters=(32, 64)")
        self.kernel_size = int(kernel_size)
        self.hidden_units = int(hidden_units or auto_width(self.input_size, self.latent_dim))
        check_hidden_widths([self.hidden_units], self.input_size, self.latent_dim, "hidden_units")
        self._attach(
            *conv_networks(
                self.data_shape, self.latent_dim, self.filters, self.kernel_size, self.hidden_units, self.dtype_policy
            )
        )

    def family_config(self):
        return {"filters": list(self.filters), "kernel_size": self.kernel_size, "hidden_units": self.hidden_units}
