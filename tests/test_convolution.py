"""zoo.convolution: the transposed convolution's kernel gradient by patches equals TensorFlow's,
and the layer is Keras' Conv2DTranspose wherever Keras does not run on JAX's CPU (here: TensorFlow).
tests/test_jax_backend.py checks the custom gradient on JAX itself."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from zoo.convolution import Conv2DTranspose, conv_transpose_kernel_gradient, same_padding

# (height, width, kernel, stride): odd and even sizes, kernels smaller, equal to and larger than the stride.
CASES = [(7, 7, 3, 2), (14, 13, 3, 2), (9, 10, 5, 3), (4, 4, 7, 7), (6, 5, 4, 2), (8, 8, 3, 1), (3, 5, 2, 2)]


@pytest.mark.parametrize("height, width, kernel_size, stride", CASES)
def test_kernel_gradient_by_patches_equals_tensorflows(height, width, kernel_size, stride):
    rng = np.random.default_rng(kernel_size * 10 + stride)
    x = rng.normal(size=(2, height, width, 3)).astype("float32")
    kernel = tf.Variable(rng.normal(size=(kernel_size, kernel_size, 4, 3)).astype("float32"))
    output_gradient = rng.normal(size=(2, height * stride, width * stride, 4)).astype("float32")
    with tf.GradientTape() as tape:
        outputs = ops.conv_transpose(x, kernel, stride, padding="same")
        loss = tf.reduce_sum(outputs * output_gradient)
    expected = tape.gradient(loss, kernel).numpy()
    got = ops.convert_to_numpy(conv_transpose_kernel_gradient(x, output_gradient, kernel.shape, (stride, stride)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_same_padding_is_tensorflows():
    for size, kernel_size, stride in [(28, 3, 2), (7, 3, 2), (13, 3, 2), (10, 5, 3), (8, 1, 1), (6, 4, 2), (5, 7, 7)]:
        before, after = same_padding(size, kernel_size, stride)
        x = np.arange(1, size + 1, dtype="float32").reshape(1, size, 1)  # the padding reads 0
        kernel = np.zeros((kernel_size, 1, 1), "float32")
        kernel[0] = 1  # picks the first row of each window: the padded row at `before` rows above
        picked = tf.nn.conv1d(x, kernel, stride, "SAME").numpy().ravel()
        starts = np.arange(len(picked)) * stride - before
        np.testing.assert_array_equal(picked, np.where(starts >= 0, starts + 1, 0))
        assert before + after == max((len(picked) - 1) * stride + kernel_size - size, 0)


def test_the_layer_is_keras_conv2d_transpose_on_tensorflow():
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 5)).astype("float32")
    ours = Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")
    theirs = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")
    ours.build(x.shape), theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    assert isinstance(ours, keras.layers.Conv2DTranspose)
    np.testing.assert_array_equal(ops.convert_to_numpy(ours(x)), ops.convert_to_numpy(theirs(x)))
    assert keras.layers.deserialize(keras.layers.serialize(ours)).get_config() == ours.get_config()
