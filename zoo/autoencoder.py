"""The shape every zoo model shares: encoder trunk -> code (latent_dim) -> decoder -> output.

A family (dense, conv, LSTM, Transformer) only builds its two networks: the trunk maps an
input to hidden features of width N, the decoder maps a code of width M back to logits of
the input's shape. This base class adds the code head and the output activation, checks
inputs, and gives every family the same `encode` / `decode` / `call` / config behaviour, and
the optional penalties on the code: sparsity (L1 or KL to a target activation) and the
contractive penalty (Rifai et al. 2011). The VAE (`zoo.vae`) and the other types reuse a
family's networks as their backbone.
"""

import math

import keras
import numpy as np
from keras import ops

from zoo.errors import ZooError, unknown_name
from zoo.layers import OptimizerBuiltAtCompile, batch_jacobian, float32_policy, quantized_dtype
from zoo.presets import PresetMixin
from zoo.registry import check_options, model_class

OUTPUT_ACTIVATIONS = ("sigmoid", "linear")
SPARSITY = ("l1", "kl")
# The plain autoencoders' penalties: a type over a backbone trains with its own objective instead.
PENALTY_OPTIONS = ("sparsity", "sparsity_weight", "sparsity_target", "contractive_weight")


class Autoencoder(PresetMixin, OptimizerBuiltAtCompile, keras.Model):
    """Base class of the plain autoencoders; subclasses call `_attach(trunk, decoder)` in `__init__`.

    Args:
        input_shape: one example's shape, without the batch axis.
        latent_dim: width M of the code; must be smaller than the input size K.
        output_activation: `"sigmoid"` for data in [0, 1] (images), `"linear"` for standardised series.
        sparsity: a penalty on the code added to the compiled loss: None, "l1" (sparsity_weight x
            the mean over the batch of sum |code|) or "kl" (sparsity_weight x sum over code units
            of KL(rho || rho_hat), rho_hat the batch mean of sigmoid(code), rho = sparsity_target).
        sparsity_weight: weight of the sparsity penalty.
        sparsity_target: rho, the mean activation the "kl" penalty aims at, in (0, 1).
        contractive_weight: weight of the contractive penalty, the squared Frobenius norm of the
            encoder's Jacobian d code / d x (batch mean); 0: off.
        dtype: a Keras dtype policy ("float32", "mixed_bfloat16", ...) or a `DTypePolicyMap`; it
            reaches every sublayer, except that the code head, logits and output stay float32
            under mixed precision (Keras' mixed-precision guide: they feed losses and export). A
            map's per-layer entries (quantized layers) reach those layers too.

    `model.quantize("int8")` quantizes the Dense layers; the config then records their policies
    (`zoo.layers.quantized_dtype`), so `save` / `keras.models.load_model` and
    `save_weights` / `load_weights` into `from_config(get_config())` round-trip the int8 model.
    """

    input_rank = None  # rank of one example a family accepts; None: any rank

    def __init__(
        self,
        input_shape,
        latent_dim,
        output_activation="sigmoid",
        sparsity=None,
        sparsity_weight=1e-3,
        sparsity_target=0.05,
        contractive_weight=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_shape = _validate_shape(input_shape, self.input_rank, getattr(type(self), "registry_name", type(self).__name__))
        self.input_size = math.prod(self.data_shape)
        self.latent_dim = _validate_latent(latent_dim, self.input_size)
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ZooError(
                f"output_activation must be one of {', '.join(OUTPUT_ACTIVATIONS)}, got {output_activation!r}"
            )
        self.output_activation = output_activation
        self.sparsity, self.sparsity_weight, self.sparsity_target, self.contractive_weight = check_penalties(
            sparsity, sparsity_weight, sparsity_target, contractive_weight
        )

    def _attach(self, encoder_trunk, decoder):
        """Adds the family's networks, the float32 code head and output, then builds the model."""
        self.encoder_trunk = encoder_trunk
        self.decoder_net = decoder
        # Codes, logits and outputs stay float32 under mixed precision: they feed losses and export.
        self.code_head = self.code_head_layer("code")
        self.output_layer = keras.layers.Activation(self.output_activation, dtype=float32_policy(self.dtype_policy), name="output")
        inputs = keras.Input(self.data_shape)
        # x -> code as one functional model sharing these weights (classifier heads, export, probes).
        self.encoder = keras.Model(inputs, self.code_head(encoder_trunk(inputs)), name="encoder")
        self.build((None, *self.data_shape))

    def build(self, input_shape=None):
        # Weights exist from construction on, so save/load and export never meet a lazy model
        # (the code head was built by the functional encoder in `_attach`).
        self.output_layer.build(self.decoder_net.output.shape)
        self.built = True

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, before Keras wraps errors from `call` in a multi-line report.
        self.check_input(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def check_input(self, x, shape=None, what="inputs"):
        """Raises a one-line ZooError if `x` does not have the shape (batch, *shape) or is not float."""
        shape = self.data_shape if shape is None else tuple(shape)
        got = tuple(x.shape)
        if got == shape:  # one example: suggesting input_shape=got[1:] would point the wrong way
            raise ZooError(
                f"{self.name} expects {what} of shape (batch, {', '.join(map(str, shape))}), got one example of shape {got}; "
                f"add the batch axis: x[None] (or np.expand_dims(x, 0)) has shape (1, {', '.join(map(str, shape))})"
            )
        if len(got) != len(shape) + 1 or any(g is not None and g != s for g, s in zip(got[1:], shape)):
            raise ZooError(
                f"{self.name} expects {what} of shape (batch, {', '.join(map(str, shape))}), got {got}; "
                f"reshape the data or create the model with input_shape={got[1:]}"
            )
        dtype = np.dtype(keras.backend.standardize_dtype(x.dtype))
        if not np.issubdtype(dtype, np.floating):
            raise ZooError(
                f"{self.name} expects float {what} (images scaled to [0, 1]), got {dtype}; "
                "convert with x.astype('float32') / 255 for 8-bit images"
            )

    def code_head_layer(self, name):
        """A new layer from trunk features to a float32 code of width M (the VAE's z_log_var head too)."""
        return keras.layers.Dense(self.latent_dim, dtype=float32_policy(self.dtype_policy), name=name)

    def features(self, x, training=False):
        """Hidden features from the encoder trunk (width N; a conv_ae with a spatial code: a feature map)."""
        return self.encoder_trunk(x, training=training)

    def encode(self, x, training=False):
        """Codes of shape (batch, latent_dim)."""
        self.check_input(x)
        return self.code_head(self.features(x, training=training))

    def decode_logits(self, z, training=False):
        """Decoder output before the output activation, float32, shape (batch, *input_shape)."""
        return self.decoder_net(z, training=training)

    def decode(self, z, training=False):
        """Reconstructions from codes of shape (batch, latent_dim)."""
        self.check_input(z, (self.latent_dim,), what="codes")
        return self.output_layer(self.decode_logits(z, training=training))

    def call(self, x, training=False):
        return self.output_layer(self.decode_logits(self.code_head(self.features(x, training)), training))

    # --- penalties on the code -------------------------------------------------------------
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss plus the sparsity and contractive penalties on the codes of `x`."""
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if x is None or (self.sparsity is None and not self.contractive_weight):
            return loss
        return ops.cast(loss, "float32") + self.code_penalty(x, training)

    def code_penalty(self, x, training=False):
        """sparsity_weight x the sparsity penalty + contractive_weight x the contractive penalty, float32."""
        penalty = ops.zeros((), "float32")
        if self.contractive_weight:
            codes, jacobian_norm = self.contractive_penalty(x, training)
            penalty = penalty + self.contractive_weight * jacobian_norm
        else:
            codes = self.encode(x, training=training)
        if self.sparsity is not None:
            penalty = penalty + self.sparsity_weight * sparsity_penalty(codes, self.sparsity, self.sparsity_target)
        return penalty

    def contractive_penalty(self, x, training=False):
        """(codes, batch mean of ||d code / d x||_F^2): the exact Jacobian of each example's code."""
        codes, jacobian = batch_jacobian(lambda x: self.encode(x, training=training), x, self.variables)
        jacobian = ops.cast(jacobian, "float32")  # (batch, latent_dim, *input_shape)
        return codes, ops.mean(ops.sum(ops.reshape(ops.square(jacobian), (ops.shape(jacobian)[0], -1)), axis=-1))

    def family_config(self):
        """The family's own options (what a VAE backbone_config holds); subclasses extend it."""
        return {}

    def backbone_config(self):
        """Every option a model type built over this network needs to rebuild it (its `backbone_config`)."""
        return {"output_activation": self.output_activation, **self.family_config()}

    def get_config(self):
        config = {
            **super().get_config(),
            "input_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "output_activation": self.output_activation,
            **self.family_config(),
            "sparsity": self.sparsity,
            "sparsity_weight": self.sparsity_weight,
            "sparsity_target": self.sparsity_target,
            "contractive_weight": self.contractive_weight,
        }
        return {**config, "dtype": quantized_dtype(self) or config["dtype"]}


def sparsity_penalty(codes, kind, target):
    """"l1": batch mean of sum |code|; "kl": sum over code units of KL(target || rho_hat) between
    Bernoulli means, rho_hat the batch mean of sigmoid(code)."""
    codes = ops.cast(codes, "float32")
    if kind == "l1":
        return ops.mean(ops.sum(ops.abs(codes), axis=-1))
    rho_hat = ops.clip(ops.mean(ops.sigmoid(codes), axis=0), 1e-6, 1 - 1e-6)
    return ops.sum(target * ops.log(target / rho_hat) + (1 - target) * ops.log((1 - target) / (1 - rho_hat)))


def check_penalties(sparsity, sparsity_weight, sparsity_target, contractive_weight):
    """(sparsity, sparsity_weight, sparsity_target, contractive_weight) checked, as stored."""
    if sparsity is not None and sparsity not in SPARSITY:
        raise unknown_name("sparsity", sparsity, SPARSITY)
    if float(sparsity_weight) < 0 or float(contractive_weight) < 0:
        raise ZooError(f"sparsity_weight and contractive_weight must be >= 0, got {sparsity_weight} and {contractive_weight}")
    if not 0 < float(sparsity_target) < 1:
        raise ZooError(f"sparsity_target must lie in (0, 1), got {sparsity_target}")
    return sparsity, float(sparsity_weight), float(sparsity_target), float(contractive_weight)


def check_plain_options(model_type, backbone_config):
    """Refuses the plain autoencoders' penalties in a type's backbone_config: the type trains with its own objective."""
    given = sorted(set(backbone_config) & set(PENALTY_OPTIONS))
    if given:
        raise ZooError(f"{', '.join(given)} apply to the plain autoencoders (dense_ae, conv_ae, lstm_ae, transformer_ae), "
                       f"not to a {model_type} backbone; drop them from backbone_config")


def build_backbone(model_type, backbone, backbone_config, input_shape, latent_dim, dtype, backbones):
    """The `backbone` family's network (`<backbone>_ae`) that a model type trains with its own objective.

    Its options are checked against the family's, so an option of another type (or family) is
    refused with the valid list.
    """
    if backbone not in backbones:
        raise unknown_name(f"{model_type} backbone", backbone, backbones)
    family = model_class(f"{backbone}_ae")
    check_options(family, backbone_config)
    check_plain_options(model_type, backbone_config)
    return family(input_shape, latent_dim, dtype=dtype, name="backbone", **backbone_config)


def _validate_shape(input_shape, rank, model):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ZooError(f"input_shape must be a tuple of positive ints, got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise ZooError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    if rank is not None and len(shape) not in (rank if isinstance(rank, tuple) else (rank,)):
        raise ZooError(
            f"{model} expects input_shape of rank {rank} (no batch axis), got {shape}; for data of that shape choose "
            "dense_ae (any shape), conv_ae (images: H, W, C), lstm_ae (sequences: steps, features) or transformer_ae (either)"
        )
    return shape


def _validate_latent(latent_dim, input_size):
    if not isinstance(latent_dim, (int, np.integer)) or isinstance(latent_dim, bool) or latent_dim < 1:
        raise ZooError(f"latent_dim must be a positive int, got {latent_dim!r}")
    if latent_dim >= input_size:
        raise ZooError(
            f"latent_dim={latent_dim} must be smaller than the input size {input_size} "
            "(an autoencoder compresses: input K > hidden N > code M); choose a smaller latent_dim"
        )
    return int(latent_dim)


def _is_whole(value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or not math.isfinite(value):
        return False
    return value == int(value) and value >= minimum


def whole_number(option, value, minimum=1):
    """`value` as an int >= `minimum` (a float such as 3.0 too); a ZooError naming `option` otherwise."""
    if not _is_whole(value, minimum):
        raise ZooError(f"{option} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def whole_numbers(option, value, example, minimum=1):
    """`value`, one whole number or a non-empty list of them (each >= `minimum`), as a list of ints: a
    single number is a list of one (units=64 means units=[64]). A ZooError naming `option` and
    showing `example` otherwise."""
    values = [value] if _is_whole(value, minimum) else value
    if not isinstance(values, (list, tuple)) or not values or not all(_is_whole(v, minimum) for v in values):
        raise ZooError(f"{option} must be a whole number >= {minimum} or a list of them, e.g. {option}={example}, got {value!r}")
    return [int(v) for v in values]


def check_hidden_widths(widths, input_size, latent_dim, option):
    """Enforces K > N > M for the hidden widths `widths` of option `option`."""
    if any(w <= latent_dim or w >= input_size for w in widths):
        raise ZooError(
            f"{option}={list(widths)} must lie strictly between latent_dim={latent_dim} and the "
            f"input size {input_size} (input K > hidden N > code M)"
        )
