"""The zoo on the JAX backend, in a virtualenv without TensorFlow (docs/backends.md's install):
tests/test_zoo.py's model harness and tests/test_autoencoder_types.py's (the types over a backbone,
the plain families' penalties) run there with KERAS_BACKEND=jax, models train on a
`keras.utils.PyDataset`, TensorFlow-only features refuse in one line, and weights saved under
one backend give the same outputs under the other.

The virtualenv is cached at $AEZOO_JAX_VENV (default: .venv-jax-test in the checkout) and
refreshed whenever constraints-jax.txt or the requirements below change; it runs the checkout
(PYTHONPATH), so no reinstall follows a code change.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo

pytestmark = [pytest.mark.slow, pytest.mark.jax]

ROOT = Path(__file__).resolve().parents[1]
# docs/backends.md's install (the zoo itself comes from the checkout), and pytest for the harness.
JAX_REQUIREMENTS = ["keras", "jax[cpu]", "h5py", "mlxtend", "scikit-learn", "scipy", "pillow", "tomli-w", "pytest"]
JAX_CONSTRAINTS = os.environ.get("AEZOO_JAX_CONSTRAINTS", str(ROOT / "constraints-jax.txt"))
# The harness cases run on JAX: each family and the VAE, both mixed precisions, the VAE's logs and sampling.
HARNESS_TESTS = [
    *(f"test_model_trains_saves_and_reloads_exactly[{case}]"
      for case in ("dense_ae-image", "conv_ae-image", "lstm_ae-sequence", "transformer_ae-image", "vae-image-conv")),
    *(f"test_mixed_precision_step_is_finite_with_float32_weights_and_outputs[vae-image-conv-{precision}]"
      for precision in ("mixed_float16", "mixed_bfloat16")),
    "test_mixed_precision_step_is_finite_with_float32_weights_and_outputs[conv_ae-image-mixed_float16]",
    "test_vae_logs_loss_reconstruction_and_kl_in_fit_and_evaluate",
    "test_vae_samples_have_the_input_shape_and_follow_the_seed",
]
# tests/test_autoencoder_types.py's cases run on JAX (pytest -k): each type trains, saves and reloads (the vq_vae's
# EMA codebook and restarts, the aae's two optimizers), the penalties (the contractive one's Jacobian) match their formulas.
TYPES_SELECTION = (
    "(test_type_trains_saves_and_reloads_exactly and (vq_vae-conv or ema-restart or cvae-dense or aae-transformer or wae or masked_ae))"
    " or test_plain_autoencoder_penalties or test_contractive_penalty_is or test_sparsity_penalties or test_vq_vae_ema_moves"
    " or test_vq_vae_codes_are_int or test_aae_samples_from or (test_mixed_precision and aae)"
)
TYPES_SELECTED = 17
LATENT = 4


@pytest.fixture(scope="session")
def jax_venv():
    """bin/ of the TensorFlow-free JAX virtualenv, created or refreshed with the documented command."""
    venv = Path(os.environ.get("AEZOO_JAX_VENV", ROOT / ".venv-jax-test"))
    bin_dir = venv / "bin"
    stamp = venv / "aezoo-requirements.sha256"
    pins = ["-c", JAX_CONSTRAINTS] if JAX_CONSTRAINTS else []
    digest = hashlib.sha256(
        " ".join(JAX_REQUIREMENTS).encode() + (Path(JAX_CONSTRAINTS).read_bytes() if JAX_CONSTRAINTS else b"")
    ).hexdigest()
    if not (bin_dir / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([str(bin_dir / "pip"), "install", "--quiet", *JAX_REQUIREMENTS, *pins], check=True, cwd=venv)
        stamp.write_text(digest)
    return bin_dir


def run_jax(bin_dir, *args, check=True):
    """`python *args` in the JAX virtualenv on the checkout, with KERAS_BACKEND=jax."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([str(bin_dir / "python"), *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def test_import_zoo_on_jax_loads_no_tensorflow_and_tensorflow_features_say_so(jax_venv):
    script = """
import json, sys
import numpy as np
import zoo
report = {"backend": zoo.create("dense_ae", input_shape=(8,), latent_dim=2).dtype_policy.name,
          "tensorflow_loaded": "tensorflow" in sys.modules, "digits": list(zoo.data.load("digits").input_shape)}
def refusal(action):
    try:
        action()
    except zoo.ZooError as error:
        return str(error)
report["tfds"] = refusal(lambda: zoo.data.load("cifar10"))
report["dataset_examples"] = refusal(lambda: __import__("zoo.dataset_examples"))
report["memory_map_stream"] = refusal(lambda: zoo.data.MappedRows(np.zeros((4, 2), "float32"), np.arange(4)).dataset())
import keras
print(json.dumps({**report, "keras_backend": keras.backend.backend(), "tensorflow_importable": __import__("importlib.util").util.find_spec("tensorflow") is not None}))
"""
    report = json.loads(run_jax(jax_venv, "-c", script).stdout.splitlines()[-1])
    assert report["keras_backend"] == "jax" and not report["tensorflow_importable"] and not report["tensorflow_loaded"]
    assert report["digits"] == [8, 8, 1]
    for feature in ("tfds", "dataset_examples", "memory_map_stream"):
        message = report[feature]
        assert message and "needs TensorFlow" in message and "pip install tensorflow" in message and "\n" not in message, feature


def test_model_harness_passes_on_jax(jax_venv):
    harness = ROOT / "tests" / "test_zoo.py"
    result = run_jax(jax_venv, "-m", "pytest", *(f"{harness}::{test}" for test in HARNESS_TESTS), "-o", "addopts=",
                     "-p", "no:cacheprovider", "-q", check=False)
    assert result.returncode == 0, result.stdout[-6000:]
    assert f"{len(HARNESS_TESTS)} passed" in result.stdout, result.stdout[-2000:]


def test_autoencoder_types_harness_passes_on_jax(jax_venv):
    result = run_jax(jax_venv, "-m", "pytest", ROOT / "tests" / "test_autoencoder_types.py", "-k", TYPES_SELECTION,
                     "-o", "addopts=", "-p", "no:cacheprovider", "-q", check=False)
    assert result.returncode == 0, result.stdout[-6000:]
    assert f"{TYPES_SELECTED} passed" in result.stdout, result.stdout[-2000:]


# Trains briefly on a PyDataset, then saves weights, inputs and outputs (encode, call, decode) to argv[1];
# the vq_vae decodes the indices it encoded.
TRAIN_AND_SAVE = """
import json, sys
import keras, numpy as np
import zoo
out = sys.argv[1]
x = zoo.data.load("digits").x_train[:96]
class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 3
    def __getitem__(self, i):
        return (x[32 * i : 32 * (i + 1)],) * 2
losses = {}
for name, options in json.loads(sys.argv[2]).items():
    keras.utils.set_random_seed(0)
    model = zoo.create(name, input_shape=(8, 8, 1), **{"latent_dim": LATENT, **options})
    vae = isinstance(model, zoo.VAE)
    model.compile(keras.optimizers.Adam(3e-3), loss=zoo.losses.bce if name.endswith("_ae") else None)
    history = model.fit(Batches(), epochs=2, verbose=0).history
    losses[name] = history.get("reconstruction_loss", history["loss"])
    model.save_weights(f"{out}/{name}.weights.h5")
    z = np.random.default_rng(1).standard_normal((5, LATENT)).astype("float32")
    if name == "vq_vae":
        z = np.asarray(model.encode(x[:5]))
    outputs = {"x": x[:5], "z": z, "call": model(x[:5]), "encode": model.encode(x[:5]), "decode": model.decode(z)}
    if vae:
        outputs["sample"] = model.sample(3, seed=0)
    np.savez(f"{out}/{name}.npz", **{k: np.asarray(v) for k, v in outputs.items()})
print(json.dumps(losses))
""".replace("LATENT", str(LATENT))

# Loads the weights saved by TRAIN_AND_SAVE into fresh models; prints each output's largest difference.
LOAD_AND_COMPARE = """
import json, sys
import numpy as np
import zoo
out = sys.argv[1]
differences = {}
for name, options in json.loads(sys.argv[2]).items():
    model = zoo.create(name, input_shape=(8, 8, 1), **{"latent_dim": LATENT, **options})
    model.load_weights(f"{out}/{name}.weights.h5")
    saved = np.load(f"{out}/{name}.npz")
    outputs = {"call": model(saved["x"]), "encode": model.encode(saved["x"]), "decode": model.decode(saved["z"])}
    if "sample" in saved:
        outputs["sample"] = model.sample(3, seed=0)
    differences[name] = {k: float(np.abs(np.asarray(v) - saved[k]).max()) for k, v in outputs.items()}
print(json.dumps(differences))
""".replace("LATENT", str(LATENT))

MODELS = {
    "conv_ae": {"filters": [8, 16], "hidden_units": 32, "normalization": "batch"},
    "vae": {"backbone": "conv", "backbone_config": {"filters": [8], "hidden_units": 32}},
    "transformer_ae": {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 4},
    # Its EMA codebook is no trainable weight: it reaches the saved weights through the JAX step's state.
    "vq_vae": {"backbone": "dense", "backbone_config": {"hidden_units": [32]}, "latent_dim": 8, "codebook_size": 8,
               "code_dim": 4, "codebook_update": "ema", "restart_unused_codes": True},
}


def run_here(script, *args):
    """`script` in this (TensorFlow) process, with sys.argv set to its arguments; returns what it printed last."""
    import contextlib
    import io

    printed = io.StringIO()
    argv = sys.argv
    sys.argv = ["-c", *map(str, args)]
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(script, "<script>", "exec"), {"__name__": "__script__"})
    finally:
        sys.argv = argv
    return printed.getvalue().splitlines()[-1]


@pytest.mark.parametrize("saved_on", ["jax", "tensorflow"])
def test_weights_saved_under_one_backend_give_the_same_outputs_under_the_other(saved_on, jax_venv, tmp_path):
    assert keras.backend.backend() == "tensorflow" and zoo.VAE
    models = json.dumps(MODELS)
    if saved_on == "jax":
        losses = json.loads(run_jax(jax_venv, "-c", TRAIN_AND_SAVE, tmp_path, models).stdout.splitlines()[-1])
        differences = json.loads(run_here(LOAD_AND_COMPARE, tmp_path, models))
    else:
        losses = json.loads(run_here(TRAIN_AND_SAVE, tmp_path, models))
        differences = json.loads(run_jax(jax_venv, "-c", LOAD_AND_COMPARE, tmp_path, models).stdout.splitlines()[-1])
    for name, history in losses.items():  # trained, so the weights compared are not the initial ones
        assert np.isfinite(history).all() and history[-1] < history[0], (name, history)
    assert set(differences) == set(MODELS)
    for name, outputs in differences.items():
        assert set(outputs) >= {"call", "encode", "decode"}
        assert max(outputs.values()) <= 1e-5, (name, outputs)


def test_aezoo_train_runs_on_jax_and_tf_distribute_says_it_needs_tensorflow(jax_venv, tmp_path):
    train = ["-m", "recipes.cli", "train", "vae", "--data", "digits", "--latent-dim", "4", "--epochs", "2",
             "--set", "backbone=dense", "--set", "backbone_config={hidden_units = [32]}"]
    run_jax(jax_venv, *train, "--out", tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert metrics["epochs"] == 2 and np.isfinite(metrics["test_mse"]) and len(history) == 3
    assert (tmp_path / "run" / "model.keras").is_file()

    refused = run_jax(jax_venv, *train, "--out", tmp_path / "mirrored", "--strategy", "mirrored", check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    message = refused.stderr.strip().splitlines()[-1]
    assert "--strategy mirrored" in message and "needs TensorFlow" in message and "pip install tensorflow" in message


# zoo.convolution.Conv2DTranspose against Keras' layer with the same weights on JAX's CPU: outputs and the
# gradients of the input, kernel and bias ("same" at strides 1-3, "valid" with kernel = stride, mixed_bfloat16).
CONV_TRANSPOSE_GRADIENTS = """
import json
import jax, keras, numpy as np
from zoo.backend import on_jax_cpu
from zoo.convolution import Conv2DTranspose
rng = np.random.default_rng(0)
report = {"on_jax_cpu": on_jax_cpu(), "cases": []}
for size, kernel_size, strides, padding, policy in [(7, 3, 2, "same", "float32"), (6, 5, 3, "same", "float32"),
        (5, 3, 1, "same", "float32"), (4, 7, 7, "valid", "float32"), (7, 3, 2, "same", "mixed_bfloat16")]:
    options = dict(filters=4, kernel_size=kernel_size, strides=strides, padding=padding, activation="relu", dtype=policy)
    ours, theirs = Conv2DTranspose(**options), keras.layers.Conv2DTranspose(**options)
    x = rng.normal(size=(3, size, size + 1, 5)).astype("float32")
    ours.build(x.shape), theirs.build(x.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ours.get_weights()]
    ours.set_weights(weights), theirs.set_weights(weights)
    def loss(values, x, layer):
        outputs, _ = layer.stateless_call(values, [], x)
        return (outputs.astype("float32") ** 2).sum()
    results = [jax.value_and_grad(loss, (0, 1))([v.value for v in layer.trainable_variables], x, layer)
               for layer in (ours, theirs)]
    (ours_loss, (ours_weights, ours_x)), (theirs_loss, (theirs_weights, theirs_x)) = results
    def relative(a, b):
        a, b = np.asarray(a, "float32"), np.asarray(b, "float32")
        return float(np.abs(a - b).max() / np.abs(b).max())
    report["cases"].append({"policy": policy, "loss": relative(ours_loss, theirs_loss), "x": relative(ours_x, theirs_x),
                            "weights": max(relative(a, b) for a, b in zip(ours_weights, theirs_weights))})
print(json.dumps(report))
"""


def test_conv_transpose_on_jax_cpu_has_keras_outputs_and_gradients(jax_venv):
    report = json.loads(run_jax(jax_venv, "-c", CONV_TRANSPOSE_GRADIENTS).stdout.splitlines()[-1])
    assert report["on_jax_cpu"]  # the path under test runs
    assert len(report["cases"]) == 5
    for case in report["cases"]:
        tolerance = 2e-2 if case["policy"] == "mixed_bfloat16" else 1e-5
        assert max(case["loss"], case["x"], case["weights"]) <= tolerance, case
