"""Pretrained presets (keras-hub style): weights that ship with the package and load offline.

Each preset is three files in `zoo/presets/`: `<name>.json` (model name and config, the
sha256 of the weights, the card's metrics and its reproducible check), `<name>.weights.h5`
and `<name>.md` (the model card). `recipes/tools/build_presets.py` builds them from `aezoo run` commands.
"""

import hashlib
import json
import warnings
from pathlib import Path

from zoo.errors import ZooError, unknown_name
from zoo.registry import create

PRESETS_DIR = Path(__file__).parent / "presets"
CHECK_SLICE = PRESETS_DIR / "fashion_mnist_check.npz"


def list_presets():
    """{name: preset description dict} for every preset shipped in zoo/presets/."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(PRESETS_DIR.glob("*.json"))}


def preset_info(name):
    path = PRESETS_DIR / f"{name}.json"
    if not path.exists():
        raise unknown_name("preset", name, list_presets())
    return json.loads(path.read_text())


def sha256(path):
    """Hex sha256 of a weights file (a few MB: read whole)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def from_preset(name, **overrides):
    """Builds the preset's model and loads its verified weights; no network is used.

    Args:
        name: a name from `list_presets()`.
        overrides: config keys to change that keep the architecture, e.g. `dtype="mixed_float16"`
            for mixed-precision fine-tuning, or a VAE's `beta`.

    Example:
        >>> model = zoo.from_preset("conv_ae_fashion_mnist")
        >>> model.compile("adam", loss=zoo.losses.bce); model.fit(x, x, epochs=2)  # fine-tune
    """
    info = preset_info(name)
    weights = PRESETS_DIR / f"{name}.weights.h5"
    if not weights.exists():
        raise ZooError(f"preset {name}: weights file {weights} is missing; reinstall autoencoder-zoo")
    if sha256(weights) != info["sha256"]:
        raise ZooError(
            f"preset {name}: {weights.name} does not match its sha256 (tampered or truncated); reinstall autoencoder-zoo"
        )
    model = create(info["model"], **{**architecture_options(name), **overrides})
    try:
        with warnings.catch_warnings():
            # Keras only warns when a layer finds no weights and keeps its random ones: refuse that too
            warnings.simplefilter("error", UserWarning)
            model.load_weights(weights)
    except (ValueError, UserWarning) as error:
        raise ZooError(
            f"preset {name}: overrides {sorted(overrides)} change the architecture, so the weights do not fit "
            f"({str(error).splitlines()[0][:120]})"
        ) from None
    return model


def architecture_options(name):
    """The `zoo.create` keyword options of preset `name`'s model (its config without Keras'
    layer bookkeeping), e.g. to build the same architecture untrained."""
    return {k: v for k, v in preset_info(name)["config"].items() if k not in ("name", "trainable")}


CHECK_DESCRIPTIONS = {
    "fashion_mnist": "the first 200 Fashion-MNIST test images",
    "co2": "the first 200 test windows of the co2 series",
}


def check_slice(for_model, dataset="fashion_mnist"):
    """The fixed test slice a card's check figure is measured on (Fashion-MNIST's ships with the package)."""
    import numpy as np

    if dataset != "fashion_mnist":
        from zoo import data

        return data.load(dataset).x_test[:200]
    with np.load(CHECK_SLICE) as arrays:
        images = arrays["images"].astype("float32") / 255.0
    return images[..., 0] if len(for_model.data_shape) == 2 else images


def check_reconstruction(model, dataset="fashion_mnist"):
    """Mean squared reconstruction error on the check slice of `dataset`: the figure a card stores."""
    import numpy as np

    x = check_slice(model, dataset)
    return float(np.mean((np.asarray(model.predict(x, batch_size=100, verbose=0)) - x) ** 2))
