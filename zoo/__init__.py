"""autoencoder-zoo: Keras 3 autoencoders (dense, conv, LSTM, Transformer, VAE) that save, load and export.

Runs on the TensorFlow Keras backend (the default) or on JAX (KERAS_BACKEND=jax; see docs/backends.md).

Example:
    >>> import zoo
    >>> model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16)
    >>> model.compile("adam", loss=zoo.losses.bce); model.fit(x, x, epochs=5)
"""

import os

from zoo.logs import logs_wanted, native_logs_hidden

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if not logs_wanted():
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # what logs_wanted() reads as "not asked for"

with native_logs_hidden():
    import keras  # noqa: E402,F401  (imports the backend, TensorFlow by default, with its start-up logs hidden)

from zoo.backend import check_backend  # noqa: E402

check_backend()

from zoo import aae, conv, cvae, data, dense, lstm, losses, masked_ae, presets, transformer, vae, vq_vae, wae  # noqa: E402,F401  (registers the models)
from zoo.autoencoder import Autoencoder  # noqa: E402
from zoo.contrastive import ContrastiveTraining  # noqa: E402
from zoo.errors import DataNotFoundError, ZooError  # noqa: E402
from zoo.layers import freeze_batch_norm  # noqa: E402
from zoo.presets import from_preset, list_presets, preset_info, upload_preset  # noqa: E402
from zoo.registry import create, list_models, model_class  # noqa: E402
from zoo.vae import VAE  # noqa: E402

__all__ = [
    "Autoencoder",
    "ContrastiveTraining",
    "VAE",
    "DataNotFoundError",
    "ZooError",
    "create",
    "freeze_batch_norm",
    "from_preset",
    "list_presets",
    "preset_info",
    "upload_preset",
    "list_models",
    "data",
    "losses",
    "presets",
    "model_class",
]
