"""Layers shared by the model families: learned positions, a Transformer block, pad/crop helpers;
the batch-norm layers of a model; dtype policies of heads and quantized models; the training and
evaluation steps of the custom `train_step`s."""

import keras
from keras import ops

from zoo.backend import import_tensorflow, on_jax
from zoo.errors import ZooError

# Feed-forward activations of `TransformerBlock`: gelu (the default), relu (TFLite Micro has no GELU kernel).
FF_ACTIVATIONS = ("gelu", "relu")


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
class BroadcastRepeat(keras.layers.Layer):
    """`keras.layers.RepeatVector` without a TILE op: (n, d) -> (n, steps, d) by a broadcasting multiply.

    TensorFlow Lite Micro has no TILE kernel, which RepeatVector converts to; it has MUL with
    broadcasting. Both layers are weight-free and compute the same values, so a model built with
    either takes the other's weights.

    Example:
        >>> BroadcastRepeat(28)(codes).shape  # (n, 28, d)
    """

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)

    def call(self, inputs):
        return ops.expand_dims(inputs, 1) * ops.ones((1, self.steps, 1), dtype=inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.steps, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


def repeat_layer(repeat, steps, dtype):
    """The layer that repeats a code per time step: "tile" (RepeatVector) or "broadcast" (no TILE op)."""
    if repeat == "tile":
        return keras.layers.RepeatVector(steps, dtype=dtype)
    if repeat == "broadcast":
        return BroadcastRepeat(steps, dtype=dtype)
    raise ZooError(f"unknown repeat {repeat!r}; choose tile (RepeatVector) or broadcast (no TILE op, for TFLite Micro)")


@keras.saving.register_keras_serializable(package="zoo")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm self-attention block: x + MHA(LN(x)), then x + FFN(LN(x)).

    Args:
        num_heads: attention heads; the model width is the input's last axis.
        ff_dim: width of the feed-forward hidden layer.
        activation: the feed-forward activation, one of `FF_ACTIVATIONS`.

    Example:
        >>> y = TransformerBlock(num_heads=4, ff_dim=128)(x)  # x: (n, T, 64) -> (n, T, 64)
    """

    def __init__(self, num_heads, ff_dim, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        if activation not in FF_ACTIVATIONS:
            raise ZooError(f"unknown activation {activation!r}; choose one of: {', '.join(FF_ACTIVATIONS)}")
        self.num_heads, self.ff_dim, self.activation = num_heads, ff_dim, activation

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
        self.ff_hidden = keras.layers.Dense(self.ff_dim, activation=self.activation, dtype=policy, name="ff_hidden")
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
        return {**super().get_config(), "num_heads": self.num_heads, "ff_dim": self.ff_dim, "activation": self.activation}


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


def float32_policy(policy):
    """The dtype of a model's float32 layers (code heads, logits, outputs) given the model's `policy`.

    Under mixed precision these layers stay float32, as Keras' mixed-precision guide advises:
    codes, logits and outputs feed losses and export. A `DTypePolicyMap` (a quantized model's
    config, or one passed to the constructor) becomes the same map over float32, so its entries
    (e.g. `int8_from_float32` for the code head's path) still reach these layers.
    """
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        return keras.dtype_policies.DTypePolicyMap("float32", dict(policy.items()))
    return "float32"


def layer_policy(layer):
    """`layer`'s own dtype policy: its entry in the `DTypePolicyMap` it was given, if any."""
    policy = layer.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap) and layer.path:
        return policy[layer.path]
    return policy


def quantized_dtype(model):
    """The `dtype` a model's config records once `model.quantize(...)` quantized some of its layers:
    a serialized `DTypePolicyMap` of their policies by layer path over the model's own policy
    (keras-hub's `Backbone.get_config` does the same); None when no layer is quantized.

    The constructor passes that map to every sublayer, so a model rebuilt from its config creates
    the quantized variables (int8 kernel and scale) that `save` wrote, and `load_model` fills them.
    """
    quantized = {layer.path: layer_policy(layer) for layer in model._flatten_layers() if layer.quantization_mode}
    if not quantized:
        return None
    default = model.dtype_policy
    if isinstance(default, keras.dtype_policies.DTypePolicyMap):
        default = default.default_policy
    return keras.dtype_policies.serialize(keras.dtype_policies.DTypePolicyMap(default, quantized))


def batch_norm_layers(model):
    """Every BatchNormalization layer in `model`, nested ones included."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def freeze_batch_norm(model):
    """Keeps every batch-norm layer of `model` in inference mode, also in `fit` (Keras: `trainable = False`
    on a BatchNormalization layer), and returns how many there are.

    For fine-tuning a pretrained model on a few batches, as Keras' transfer-learning guide advises:
    trained, the layers normalise each step by its batch's statistics while their moving averages
    (momentum 0.99) still hold the pretraining data's, so the fine-tuned weights are evaluated
    with statistics they were not trained with.

    Example:
        >>> model = zoo.from_preset("conv_ae_denoise_fashion_mnist")
        >>> zoo.freeze_batch_norm(model)
        >>> model.compile("adam", loss=zoo.losses.bce); model.fit(noisy, clean, epochs=2)
    """
    norms = batch_norm_layers(model)
    for norm in norms:
        norm.trainable = False
    return len(norms)


def gradient_step(model, objective, optimizer=None, variables=None):
    """One optimizer step of `model` on the first value `objective()` returns (the loss); returns them all.

    TensorFlow's form, for custom `train_step`s (the VAE's, contrastive training's). Replicas' gradients are summed,
    so each replica contributes its mean / replicas; the optimizer's loss scale (mixed_float16)
    keeps small float16 gradients alive. `optimizer` and `variables` (default: the model's
    optimizer and trainable weights) let a model with two players (an adversarial one) step each.
    """
    optimizer = model.optimizer if optimizer is None else optimizer
    variables = model.trainable_weights if variables is None else variables
    tf = import_tensorflow("a custom train_step on TensorFlow")
    with tf.GradientTape() as tape:
        values = objective()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scaled_loss = optimizer.scale_loss(values[0] / replicas)
    gradients = tape.gradient(scaled_loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))
    return values


def objective_train_step(model, step_input, objective, track):
    """The body of a custom `train_step(*step_input)` that minimises the loss `objective(data)` returns first.

    `objective(data)` returns (loss, *more); `track(*values)` updates the model's metrics with them
    and returns the logs. TensorFlow calls `train_step(data)`, which updates the variables in
    place and returns the logs; JAX calls it statelessly, `train_step(state, data)` -> (logs,
    state), as Keras' JAX trainer does (its "customizing fit with JAX" guide).
    """
    if not on_jax():
        (data,) = step_input
        return track(*gradient_step(model, lambda: objective(data)))
    import jax

    (trainable, non_trainable, optimizer_values, metric_values), data = step_input
    optimizer_state = list(zip(model.optimizer.variables, optimizer_values))

    def scaled_loss(trainable_values):
        # The optimizer's variables are mapped too: the objective may read its step count, and
        # the loss scale (mixed_float16) is one of them.
        variables = [*zip(model.trainable_variables, trainable_values), *optimizer_state]
        values, updated = stateless_values(model, variables, non_trainable, lambda: objective(data))
        with keras.StatelessScope(state_mapping=optimizer_state):
            return model.optimizer.scale_loss(values[0]), (values, updated)

    (_, (values, non_trainable)), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(trainable)
    trainable, optimizer_values = model.optimizer.stateless_apply(optimizer_values, gradients, trainable)
    logs, metric_values = stateless_metrics(model, metric_values, lambda: track(*values))
    return logs, (trainable, non_trainable, optimizer_values, metric_values)


def objective_test_step(model, step_input, objective, track):
    """The body of a custom `test_step(*step_input)`: `objective_train_step` without the update."""
    if not on_jax():
        (data,) = step_input
        return track(*objective(data))
    (trainable, non_trainable, metric_values), data = step_input
    variables = list(zip(model.trainable_variables, trainable))
    values, non_trainable = stateless_values(model, variables, non_trainable, lambda: objective(data))
    logs, metric_values = stateless_metrics(model, metric_values, lambda: track(*values))
    return logs, (trainable, non_trainable, metric_values)


def stateless_values(model, variables, non_trainable, compute):
    """`compute()` with `variables` ((variable, value) pairs) and the model's non-trainable variables
    set to `non_trainable`; returns its result and the non-trainable values after it."""
    mapping = [*variables, *zip(model.non_trainable_variables, non_trainable)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = compute()
    return result, updated_values(scope, model.non_trainable_variables, non_trainable)


def stateless_metrics(model, metric_values, track):
    """(logs, new metric values) of `track()` run on the metrics' variables set to `metric_values`."""
    with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, metric_values))) as scope:
        logs = track()
    return logs, updated_values(scope, model.metrics_variables, metric_values)


def updated_values(scope, variables, values):
    """The values of `variables` in a StatelessScope after it ran: the assigned ones, else `values`."""
    return [value if scope.get_current_value(v) is None else scope.get_current_value(v) for v, value in zip(variables, values)]
