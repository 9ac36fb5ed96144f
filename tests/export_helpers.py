"""Exports shared by tests/test_export.py, tests/test_edge.py and tests/test_aarch64.py: every family and VAE backbone,
trained briefly on real data (scikit-learn digits, 8x8) and exported once per test session, by
whichever pytest-xdist worker needs them first."""

import dataclasses
import fcntl
import os
import pickle
from pathlib import Path

# name -> (zoo model, options, reads the images as (rows, columns) sequences)
FAMILIES = {
    "dense_ae": ("dense_ae", {"hidden_units": (32,)}, False),
    "conv_ae": ("conv_ae", {"filters": (8, 16)}, False),
    "conv_ae_residual": (
        "conv_ae",
        # Batch normalization folds into the convolutions; GroupNorm's int8 kernels give results up to
        # 8 steps apart in tflite_runtime 2.14 and ai_edge_litert (docs/models.md, conv_ae options).
        {"filters": (8, 16), "normalization": "batch", "activation": "silu", "blocks_per_stage": 1, "upsampling": "resize"},
        False,
    ),
    "lstm_ae": ("lstm_ae", {"units": (16,)}, True),
    "transformer_ae": (
        "transformer_ae",
        {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 2},
        False,
    ),
    "vae_dense": ("vae", {"backbone": "dense", "backbone_config": {"hidden_units": [32]}}, False),
    "vae_conv": ("vae", {"backbone": "conv", "backbone_config": {"filters": [8, 16]}}, False),
    "vae_lstm": ("vae", {"backbone": "lstm", "backbone_config": {"units": [16]}}, True),
    "vae_transformer": (
        "vae",
        {"backbone": "transformer", "backbone_config": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32}},
        True,
    ),
}
LATENT_DIM = 8
TRAIN_SAMPLES = 300
# dense_ae also gets a dynamic-range file: the one tflite_runtime 2.14 cannot run.
EXTRA_MODES = {"dense_ae": ("dynamic",)}


@dataclasses.dataclass
class Exported:
    """One trained model, the data it was trained on, and its export."""

    model: object
    data: object  # zoo.data.DataSplits in the model's input shape
    out_dir: Path
    report: object


def train_briefly(name, data, seed=0, **extra_options):
    """A FAMILIES model (with `extra_options` on top of its options) trained for one epoch on
    TRAIN_SAMPLES examples of `data`."""
    import keras

    import zoo

    registry_name, options, _ = FAMILIES[name]
    keras.utils.set_random_seed(seed)
    model = zoo.create(registry_name, input_shape=data.input_shape, **{"latent_dim": LATENT_DIM, **options, **extra_options})
    x = data.x_train[:TRAIN_SAMPLES]
    # Eager: for ten steps, tracing the train step would cost more than it saves.
    if registry_name == "vae":
        model.compile(keras.optimizers.Adam(3e-3), run_eagerly=True)
        model.fit(x, epochs=1, batch_size=32, verbose=0)
    else:
        model.compile(keras.optimizers.Adam(3e-3), loss=zoo.losses.bce, run_eagerly=True)
        model.fit(x, x, epochs=1, batch_size=32, verbose=0)
    return model


def session_exports(tmp_path_factory):
    """{family: Exported} for every FAMILIES entry, with ONNX files: exported by the first worker of
    this test session that asks (the others wait, then load its models and reports)."""
    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist each worker's basetemp sits in one folder of this session: they share it.
    return _exported_models((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "exports")


_LOADED = {}


def _exported_models(root):
    if root not in _LOADED:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
            if not (root / "exports.pkl").exists():
                _export_all(root)
            _LOADED[root] = _load_all(root)
    return _LOADED[root]


def _export_all(root):
    """Trains and exports every family under `root`; exports.pkl, written last, marks them done."""
    import zoo
    from export import export_model

    digits = zoo.data.load("digits")
    reports = {}
    for name, (_, _, sequences) in FAMILIES.items():
        data = digits.as_sequences() if sequences else digits
        model = train_briefly(name, data)
        modes = ("float32", *EXTRA_MODES.get(name, ()), "int8")
        reports[name] = export_model(
            model, root / name, quantize=modes, calibration_data=data, calibration_samples=100, verify_samples=32, onnx=True
        )
        model.save(root / f"{name}.keras")
    (root / "exports.pkl").write_bytes(pickle.dumps(reports))


def _load_all(root):
    import keras

    import zoo

    digits = zoo.data.load("digits")
    reports = pickle.loads((root / "exports.pkl").read_bytes())
    return {
        name: Exported(
            keras.models.load_model(root / f"{name}.keras", compile=False),
            digits.as_sequences() if sequences else digits,
            root / name,
            reports[name],
        )
        for name, (_, _, sequences) in FAMILIES.items()
    }
