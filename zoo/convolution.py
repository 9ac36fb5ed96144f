"""Conv2DTranspose that trains as fast on JAX's CPU backend as on TensorFlow.

XLA's CPU compiler computes the kernel gradient of a transposed convolution with a generic loop:
one 3x3, 64-channel, stride-2 Conv2DTranspose at batch 128 spends ~200 ms there, 30 times its
forward pass, which makes the convolutional models train 10-15 times slower on JAX's CPU than on
TensorFlow. On that backend this layer keeps XLA's convolution for the forward pass and the input
gradient and computes the kernel gradient as one matrix product over the patches of the output
gradient. Everywhere else (TensorFlow, JAX on an accelerator) it is Keras' layer unchanged, so
saved weights, configs and exports (TRANSPOSE_CONV) do not change.
"""

import functools

import keras
from keras import ops

from zoo.backend import on_jax_cpu


def same_padding(size, kernel_size, stride):
    """(before, after) padding of a "same" convolution along one axis, as TensorFlow and XLA pad."""
    total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def patch_rows(x, kernel_size, strides):
    """The "same" convolution patches of NHWC `x` as rows: (examples x output positions, kernel
    height x kernel width x channels), ordered as an HWIO kernel's flattened input axes."""
    (kernel_h, kernel_w), (stride_h, stride_w) = kernel_size, strides
    height, width, channels = x.shape[1:]
    out_h, out_w = -(-height // stride_h), -(-width // stride_w)
    x = ops.pad(x, [(0, 0), same_padding(height, kernel_h, stride_h), same_padding(width, kernel_w, stride_w), (0, 0)])
    patches = ops.concatenate(
        [x[:, i:i + (out_h - 1) * stride_h + 1:stride_h, j:j + (out_w - 1) * stride_w + 1:stride_w]
         for i in range(kernel_h) for j in range(kernel_w)],
        axis=-1,
    )
    return ops.reshape(patches, (-1, kernel_h * kernel_w * channels))


def conv_transpose_kernel_gradient(x, output_gradient, kernel_shape, strides):
    """Gradient of a "same" transposed convolution's kernel (height, width, filters, channels).

    The transposed convolution is the adjoint of the strided convolution of its output with the
    same kernel, so the gradient is that convolution's kernel gradient with the roles of input
    and output swapped: the output gradient's patches against the input, one 2-D matrix product
    (the form XLA's CPU dot is fast for).
    """
    rows = patch_rows(output_gradient, kernel_shape[:2], strides)
    product = ops.matmul(ops.transpose(rows), ops.reshape(x, (-1, kernel_shape[-1])))
    return ops.reshape(product, kernel_shape)


@functools.cache
def jax_conv_transpose():
    """Keras' "same" conv_transpose(x, kernel, strides) as a JAX function with the kernel gradient above."""
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv_transpose(x, kernel, strides):
        return ops.conv_transpose(x, kernel, strides, padding="same")

    def forward(x, kernel, strides):
        return conv_transpose(x, kernel, strides), (x, kernel)

    def backward(strides, residuals, output_gradient):
        x, kernel = residuals
        x_gradient = ops.conv(output_gradient, kernel, strides, padding="same")
        return x_gradient, conv_transpose_kernel_gradient(x, output_gradient, kernel.shape, strides)

    conv_transpose.defvjp(forward, backward)
    return conv_transpose


@keras.saving.register_keras_serializable(package="zoo")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`; on JAX's CPU backend its kernel gradient is a matrix product
    (see the module docstring), for "same" padding, or "valid" with kernel = stride (the two agree)."""

    def call(self, inputs):
        plain_form = (
            self.data_format == "channels_last"
            and self.dilation_rate == (1, 1)
            and self.output_padding is None
            and (self.padding == "same" or self.kernel_size == self.strides)
        )
        if not (plain_form and on_jax_cpu()):
            return super().call(inputs)
        outputs = jax_conv_transpose()(inputs, ops.convert_to_tensor(self.kernel), self.strides)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)
