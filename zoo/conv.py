"""Convolutional autoencoder: strided Conv2D encoder, upsampling decoder, any H x W x C; optional
normalization, SiLU, residual blocks per stage and a spatial code on any stage's grid."""

import dataclasses
import math

import keras

from zoo.autoencoder import Autoencoder, check_hidden_widths, whole_number, whole_numbers
from zoo.convolution import Conv2DTranspose
from zoo.errors import ZooError, unknown_name
from zoo.layers import auto_width, float32_policy, pad_crop_2d, padding_to_multiple
from zoo.registry import register_model


NORMALIZATIONS = ("none", "batch", "group")
ACTIVATIONS = ("relu", "silu")
UPSAMPLINGS = ("transpose", "resize")
CODES = ("dense", "spatial")


@dataclasses.dataclass(frozen=True)
class ConvStyle:
    """How each convolution stage is built (the options beyond widths; defaults: the plain network).

    normalization: "none", "batch" (folded into the convolutions at export) or "group"
        (GroupNorm, independent of the batch); activation: "relu" or "silu"; blocks: residual
        blocks (two 3x3 convolutions and a skip) after each stride-2 stage, one count per
        stage (input side first; the decoder mirrors them); upsampling:
        "transpose" (Conv2DTranspose) or "resize" (nearest-neighbour resize + Conv2D, free of
        the checkerboard artefacts of strided transposed convolutions).
    """

    kernel_size: int = 3
    normalization: str = "none"
    activation: str = "relu"
    blocks: tuple = ()
    upsampling: str = "transpose"
    dtype: object = None

    def normalize(self, h, name):
        if self.normalization == "batch":
            return keras.layers.BatchNormalization(dtype=self.dtype, name=f"{name}_norm")(h)
        # Groups of (at most) 8 channels' worth: GroupNorm(1) would be LayerNorm, one per channel InstanceNorm.
        groups = math.gcd(h.shape[-1], 8)
        return keras.layers.GroupNormalization(groups, dtype=self.dtype, name=f"{name}_norm")(h)

    def conv(self, h, filters, name, strides=1, transpose=False, kernel_size=None):
        """Convolution -> normalization -> activation (the activation fused when there is no normalization)."""
        layer = Conv2DTranspose if transpose else keras.layers.Conv2D
        plain = self.normalization == "none"
        h = layer(filters, kernel_size or self.kernel_size, strides=strides, padding="same",
                  activation=self.activation if plain else None, dtype=self.dtype, name=name)(h)
        if plain:
            return h
        return keras.layers.Activation(self.activation, dtype=self.dtype, name=f"{name}_act")(self.normalize(h, name))

    def residual_blocks(self, h, count, name):
        for j in range(count):
            branch = self.conv(h, h.shape[-1], f"{name}_block_{j}_a", kernel_size=3)
            branch = self.conv(branch, h.shape[-1], f"{name}_block_{j}_b", kernel_size=3)
            h = keras.layers.Add(dtype=self.dtype, name=f"{name}_block_{j}_add")([h, branch])
        return h

    def upsample(self, h, filters, name):
        if self.upsampling == "transpose":
            return self.conv(h, filters, name, strides=2, transpose=True)
        # Resizing, not UpSampling2D: the same nearest-neighbour pixels, but it converts to
        # RESIZE_NEAREST_NEIGHBOR, which TFLite Micro has, where UpSampling2D's repeat becomes TILE.
        h = keras.layers.Resizing(2 * h.shape[1], 2 * h.shape[2], interpolation="nearest", dtype=self.dtype,
                                  name=f"{name}_resize")(h)
        return self.conv(h, filters, name)


def stage_grid(height, width, stage, stages):
    """(rows, columns) of stage `stage`'s feature map (0: the first) in an encoder of `stages`
    stride-2 stages, whose input is padded as `conv_networks` pads it (28 -> 32 for three)."""
    return tuple((size + sum(padding_to_multiple(size, 2**stages))) // 2 ** (stage + 1) for size in (height, width))


def conv_networks(input_shape, latent_dim, filters, hidden_units, style, code, code_stage):
    """(trunk, decoder) for `ConvAutoencoder`: one stride-2 stage per entry of `filters`.

    A dense code: trunk -> Flatten -> Dense(hidden_units), decoder Dense -> Dense -> Reshape. A
    spatial code: the trunk ends at stage `code_stage`'s feature map (the coarsest: the last
    stage) and the decoder starts from the code reshaped onto that grid, with no dense layer on
    either side. Below a finer code stage the trunk runs the deeper stages and brings their
    context back up to the code's grid (upsample, add to that stage's map, residual blocks).
    """
    height, width, channels = input_shape
    pad, crop = pad_crop_2d(height, width, 2 ** len(filters), style.dtype)

    inputs = keras.Input(input_shape)
    h = pad(inputs) if pad else inputs
    stage_maps = []
    for i, f in enumerate(filters):
        h = style.residual_blocks(style.conv(h, f, f"conv_{i}", strides=2), style.blocks[i], f"conv_{i}")
        stage_maps.append(h)
    for i in reversed(range(code_stage, len(filters) - 1)):
        context = style.upsample(h, filters[i], f"context_{i}")
        h = keras.layers.Add(dtype=style.dtype, name=f"context_{i}_add")([stage_maps[i], context])
        h = style.residual_blocks(h, style.blocks[i], f"context_{i}")
    grid = tuple(h.shape[1:3])  # the code stage's rows and columns
    if code == "dense":
        h = keras.layers.Flatten(dtype=style.dtype)(h)
        h = keras.layers.Dense(hidden_units, activation=style.activation, dtype=style.dtype, name="hidden")(h)
    trunk = keras.Model(inputs, h, name="encoder_trunk")

    codes = keras.Input((latent_dim,))
    if code == "dense":
        h = keras.layers.Dense(hidden_units, activation=style.activation, dtype=style.dtype, name="decoder_hidden")(codes)
        h = keras.layers.Dense(math.prod(grid) * filters[-1], activation=style.activation, dtype=style.dtype,
                               name="expand")(h)
        h = keras.layers.Reshape((*grid, filters[-1]), dtype=style.dtype)(h)
    else:
        h = keras.layers.Reshape((*grid, latent_dim // math.prod(grid)), dtype=style.dtype)(codes)
        h = style.conv(h, filters[code_stage], "expand")
    for i, stage in enumerate(reversed(range(code_stage + 1))):  # mirrors the encoder from the code's stage out
        h = style.residual_blocks(style.upsample(h, filters[stage], f"deconv_{i}"), style.blocks[stage], f"deconv_{i}")
    logits = keras.layers.Conv2D(channels, style.kernel_size, padding="same", dtype=float32_policy(style.dtype), name="logits")(h)
    if crop:
        logits = crop(logits)
    return trunk, keras.Model(codes, logits, name="decoder")


@register_model("conv_ae")
class ConvAutoencoder(Autoencoder):
    """Convolutional autoencoder for images of any size (padded in, cropped back out).

    Args:
        input_shape: (height, width, channels).
        latent_dim: code width M.
        filters: channels of the stride-2 convolutions, input side first (one number: one stage).
        kernel_size: convolution kernel size.
        hidden_units: dense width N between the convolutions and the code (default between K and M;
            none with a spatial code).
        output_activation: "sigmoid" (data in [0, 1]) or "linear".
        normalization: "none", "batch" or "group" after each convolution.
        activation: "relu" or "silu".
        blocks_per_stage: residual blocks after each stride-2 stage, in encoder and decoder: one
            count for every stage, or a list with one per entry of `filters` (e.g. [0, 2]: blocks
            only at the coarsest, cheapest resolution).
        upsampling: "transpose" (Conv2DTranspose) or "resize" (nearest resize + Conv2D).
        code: "dense" (flatten, dense layers, a global code) or "spatial": a 1x1 convolution maps
            a stage's feature map (the last, coarsest, unless `code_stage` says otherwise) to
            latent_dim / (rows x columns) channels, flattened into the code, so each code entry
            describes one neighbourhood (latent_dim must be a multiple of that grid's size, e.g.
            of 7 x 7 = 49 for 28 x 28 images and two stages). Locality keeps detail a global code
            of the same width loses (restoration: denoise, inpaint).
        code_stage: with code="spatial", the stage (0: the first, finest) whose grid holds the
            code; default: the last (with two stages on 28 x 28 images, 0 puts it on 14 x 14; three
            stages pad the input to 32 x 32, and 0 puts it on 16 x 16).
            Below a finer code stage the encoder still runs the deeper stages and adds their
            upsampled maps to that stage's (a top-down path, as in feature pyramid networks), so
            a code entry keeps a small neighbourhood's detail and sees the wider context; the
            decoder starts on that grid.

    Example:
        >>> model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64))
        >>> model.encode(x).shape  # (n, 16)
        >>> residual = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16, normalization="group",
        ...                       activation="silu", blocks_per_stage=1, upsampling="resize")
        >>> spatial = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=196, code="spatial")  # 7 x 7 x 4
        >>> finer = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=392, code="spatial", code_stage=0)  # 14 x 14 x 2
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
        normalization="none",
        activation="relu",
        blocks_per_stage=0,
        upsampling="transpose",
        code="dense",
        code_stage=None,
        **kwargs,
    ):
        super().__init__(input_shape, latent_dim, output_activation, **kwargs)
        self.filters = whole_numbers("filters", filters, "[32, 64]")
        for option, value, choices in (
            ("normalization", normalization, NORMALIZATIONS),
            ("activation", activation, ACTIVATIONS),
            ("upsampling", upsampling, UPSAMPLINGS),
            ("code", code, CODES),
        ):
            if value not in choices:
                raise unknown_name(f"conv_ae {option}", value, choices)
        per_stage = isinstance(blocks_per_stage, (list, tuple))
        blocks = whole_numbers("blocks_per_stage", blocks_per_stage, "[1, 2]", minimum=0)
        self.blocks_per_stage = blocks if per_stage else blocks[0]
        blocks = blocks if per_stage else blocks * len(self.filters)  # one count: every stage
        if len(blocks) != len(self.filters):
            raise ZooError(f"blocks_per_stage must be a count >= 0 or one per stage of filters={self.filters}, got {blocks_per_stage}")
        kernel_size = whole_number("kernel_size", kernel_size)
        self.style = ConvStyle(kernel_size, normalization, activation, tuple(blocks), upsampling, self.dtype_policy)
        self.code = code
        self.code_stage = self._checked_code_stage(code_stage)
        self.hidden_units = self._checked_hidden_units(hidden_units)
        self._attach(*conv_networks(self.data_shape, self.latent_dim, self.filters, self.hidden_units, self.style, code,
                                   self.code_stage))

    def _checked_code_stage(self, code_stage):
        """The stage the code reads: the last one, or the one a spatial code names."""
        last = len(self.filters) - 1
        stage = last if code_stage is None else whole_number("code_stage", code_stage, minimum=0)
        if stage > last:
            raise ZooError(f"conv_ae code_stage={code_stage} names no stage of filters={self.filters}; choose 0 to {last}")
        if self.code == "dense" and stage != last:
            raise ZooError("conv_ae code_stage needs code='spatial' (a dense code reads the last stage); "
                           "set code='spatial' or drop code_stage")
        return stage

    def _checked_hidden_units(self, hidden_units):
        """The dense code's hidden width (None for a spatial code, whose latent_dim must fill its grid)."""
        if self.code == "spatial":
            grid = stage_grid(*self.data_shape[:2], self.code_stage, len(self.filters))
            if self.latent_dim % math.prod(grid):
                raise ZooError(
                    f"conv_ae code='spatial' spreads the code over the {grid[0]}x{grid[1]} grid of stage {self.code_stage}, so "
                    f"latent_dim must be a multiple of {math.prod(grid)}, got {self.latent_dim}; choose "
                    f"{math.prod(grid) * max(1, self.latent_dim // math.prod(grid))} or use code='dense'"
                )
            if hidden_units is not None:
                raise ZooError("conv_ae code='spatial' has no dense hidden layer; drop hidden_units or use code='dense'")
            return None
        if hidden_units is None:
            hidden_units = auto_width(self.input_size, self.latent_dim)
        else:
            hidden_units = whole_number("hidden_units", hidden_units)
        check_hidden_widths([hidden_units], self.input_size, self.latent_dim, "hidden_units")
        return hidden_units

    def code_head_layer(self, name):
        if self.code == "dense":
            return super().code_head_layer(name)
        rows, columns = self.encoder_trunk.output.shape[1:3]
        channels = self.latent_dim // (rows * columns)
        return keras.Sequential(
            [keras.layers.Conv2D(channels, 1, dtype=float32_policy(self.dtype_policy), name=f"{name}_conv"),
             keras.layers.Flatten(dtype=float32_policy(self.dtype_policy))],
            name=name,
        )

    def family_config(self):
        return {
            "filters": list(self.filters),
            "kernel_size": self.style.kernel_size,
            "hidden_units": self.hidden_units,
            "normalization": self.style.normalization,
            "activation": self.style.activation,
            "blocks_per_stage": self.blocks_per_stage,
            "upsampling": self.style.upsampling,
            "code": self.code,
            "code_stage": self.code_stage,
        }
