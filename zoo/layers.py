"""Layers shared by the model families: learned positions, a Transformer block, pad/crop helpers;
the batch-norm layers of a model; dtype policies of heads and quantized models; the optimizer
built at compile, and the training and evaluation steps of the custom `train_step`s."""

import functools

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


class OptimizerBuiltAtCompile:
    """Mixin of the zoo's models: `compile` creates the optimizer's slot variables at once.

    Keras' TensorFlow trainer otherwise creates them inside the first traced train step, and a
    `tf.function` that creates variables is traced twice: a small model's first `fit` took twice as
    long. The zoo's models own their weights from construction; a model with a layer still unbuilt
    leaves the optimizer to Keras. Under a distribution strategy `compile` runs in its scope, so
    the slots are the strategy's variables, as Keras would make them.
    """

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        if self.optimizer is not None and all(layer.built for layer in self._flatten_layers()):
            self.build_optimizer()

    def compile_from_config(self, config):
        # Keras skips a custom `compile` when it loads a model. As Keras' own, the slots exist
        # before the saved optimizer state is read into them.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built and not self.optimizer.built:
            self.build_optimizer()

    def build_optimizer(self):
        """Creates the compiled optimizer's slots for the trainable weights (a subclass with several
        optimizers gives this one its share)."""
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)


def gradient_step(model, objective, optimizer=None, variables=None):
    """One optimizer step of `model` on the first value `objective()` returns (the loss); returns them all.

    TensorFlow's form, for custom `train_step`s (the VAE's, contrastive training's). Replicas' gradients are summed,
    so each replica contributes its mean / replicas; the optimizer's loss scale (mixed_float16)
    keeps small float16 gradients alive. `optimizer` and `variables` (default: the model's
    optimizer and trainable weights, the variables it was built on) let a model with two players
    (an adversarial one) step each.
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


def stateless_gradient_step(model, objective, optimizer=None, variables=None):
    """`gradient_step` on JAX, inside the StatelessScope over the model's whole state that
    `custom_train_step` opens: the new weights, optimizer variables and whatever `objective()`
    assigned (batch-norm statistics, seed generators) are assigned in that scope."""
    import jax

    optimizer = model.optimizer if optimizer is None else optimizer
    variables = model.trainable_weights if variables is None else variables
    state = [v for group in state_variables(model, training=True) for v in group]
    current = [v.value for v in state]
    positions = [next(i for i, s in enumerate(state) if s is v) for v in variables]

    def scaled_loss(trained):
        values = list(current)
        for position, value in zip(positions, trained):
            values[position] = value
        with keras.StatelessScope(state_mapping=list(zip(state, values))) as scope:
            results = objective()
            scaled = optimizer.scale_loss(results[0])
        return scaled, (results, updated_values(scope, state, values))

    trained = [v.value for v in variables]
    (_, (results, after)), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(trained)
    for variable, value in zip(state, after):
        variable.assign(value)
    trained, optimizer_values = optimizer.stateless_apply([v.value for v in optimizer.variables], gradients, trained)
    for variable, value in [*zip(variables, trained), *zip(optimizer.variables, optimizer_values)]:
        variable.assign(value)
    return results


def custom_train_step(model, step_input, train):
    """The body of a custom `train_step(*step_input)`: `train(data, step)` takes its optimizer steps
    with `step(objective, optimizer=None, variables=None)` (`gradient_step`'s arguments, which it
    returns), updates the metrics and returns the logs.

    TensorFlow calls `train_step(data)`, which updates the variables in place. JAX calls it
    statelessly, `train_step(state, data)` -> (logs, state), as Keras' JAX trainer does (its
    "customizing fit with JAX" guide): `train` then runs in a StatelessScope over the state, so
    steps, non-trainable updates (an EMA codebook) and metrics come back as the new state.
    """
    if not on_jax():
        (data,) = step_input
        return train(data, functools.partial(gradient_step, model))
    state, data = step_input
    return stateless_run(model, state, lambda: train(data, functools.partial(stateless_gradient_step, model)), training=True)


def custom_test_step(model, step_input, evaluate):
    """The body of a custom `test_step(*step_input)`: `evaluate(data)` updates the metrics and returns the logs."""
    if not on_jax():
        (data,) = step_input
        return evaluate(data)
    state, data = step_input
    return stateless_run(model, state, lambda: evaluate(data), training=False)


def objective_train_step(model, step_input, objective, track):
    """`custom_train_step` minimising the loss `objective(data)` returns first: `objective(data)`
    returns (loss, *more), `track(*values)` updates the model's metrics with them and returns the logs."""
    return custom_train_step(model, step_input, lambda data, step: track(*step(lambda: objective(data))))


def objective_test_step(model, step_input, objective, track):
    """The body of a custom `test_step(*step_input)`: `objective_train_step` without the update."""
    return custom_test_step(model, step_input, lambda data: track(*objective(data)))


def state_variables(model, training):
    """The model's variables in the groups of Keras' JAX trainer's state: trainable, non-trainable,
    the optimizer's (when training) and the metrics'."""
    groups = [model.trainable_variables, model.non_trainable_variables]
    if training:
        groups.append(model.optimizer.variables)
    return [*groups, model.metrics_variables]


def stateless_run(model, state, compute, training):
    """(`compute()`, the new state) with the variables of `state_variables` set to `state`."""
    groups = state_variables(model, training)
    variables = [v for group in groups for v in group]
    values = [value for group in state for value in group]
    with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
        result = compute()
    values = iter(updated_values(scope, variables, values))
    return result, tuple([next(values) for _ in group] for group in groups)


def updated_values(scope, variables, values):
    """The values of `variables` in a StatelessScope after it ran: the assigned ones, else `values`."""
    return [value if scope.get_current_value(v) is None else scope.get_current_value(v) for v, value in zip(variables, values)]


def batch_jacobian(function, x, variables=()):
    """(y, d y[i] / d x[i] for each example i, shape (batch, *y.shape[1:], *x.shape[1:])) of
    y = function(x), which treats examples independently (TensorFlow's `batch_jacobian`).

    On JAX it differentiates the batch sum of y; what `function` assigns to `variables` (batch-norm
    statistics) is not kept, since the assignments would carry the differentiation's tracers.
    """
    x = ops.convert_to_tensor(x, "float32")
    if not on_jax():
        tf = import_tensorflow("a Jacobian on TensorFlow")
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return y, tape.batch_jacobian(y, x)
    import jax

    current = [(v, v.value) for v in variables]

    def summed(x):
        with keras.StatelessScope(state_mapping=current):
            y = function(x)
        return ops.sum(y, axis=0), y

    jacobian, y = jax.jacrev(summed, has_aux=True)(x)  # (*y.shape[1:], batch, *x.shape[1:])
    return y, ops.moveaxis(jacobian, len(y.shape) - 1, 0)
