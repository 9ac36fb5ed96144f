"""The Keras backends the zoo runs on, and the one-line error for features that need TensorFlow.

The models, their losses, `fit` on arrays or a `keras.utils.PyDataset`, save and load run on
TensorFlow and JAX; tf.data streaming, tf.distribute, the recipes' training engine and export
need TensorFlow.
"""

import functools
import importlib

from zoo.errors import ZooError

BACKENDS = ("tensorflow", "jax")
TENSORFLOW_INSTALL = "pip install tensorflow and run with KERAS_BACKEND=tensorflow (the default)"


def check_backend():
    """Raises a one-line ZooError unless Keras runs on one of `BACKENDS`."""
    import keras

    if keras.backend.backend() not in BACKENDS:
        raise ZooError(
            f"autoencoder-zoo runs on the Keras backends {' and '.join(BACKENDS)}, got {keras.backend.backend()!r}; "
            "unset KERAS_BACKEND or set it to 'tensorflow' or 'jax'"
        )


def on_jax():
    """Whether Keras runs on JAX (custom training steps are then stateless)."""
    import keras

    return keras.backend.backend() == "jax"


@functools.cache
def on_jax_cpu():
    """Whether Keras runs on JAX with a CPU as its device (where XLA's CPU kernels set the speed)."""
    import keras

    return on_jax() and keras.distribution.list_devices()[0].startswith("cpu")


def import_tensorflow(feature, module="tensorflow"):
    """`module` (tensorflow or a TensorFlow package) for `feature`; a one-line ZooError when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ZooError(f"{feature} needs TensorFlow ({module} is not installed); {TENSORFLOW_INSTALL}") from None
