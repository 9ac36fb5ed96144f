"""Microcontroller target (`aezoo export --micro`): single-signature int8 files for TensorFlow Lite
Micro, their C arrays, arenas measured in the TFLM interpreter, verification against the reference
kernels, the refusal of ops TFLM lacks, the model options that avoid them, and `--runtime micro`."""

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from export_helpers import FAMILIES, train_briefly

import zoo
from export import micro, micro_runtime
from recipes import cli
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # exports to TensorFlow Lite Micro, arenas measured in TFLM

pytest.importorskip("tflite_micro", reason="the micro target needs pip install tflite-micro")

ROOT = Path(__file__).resolve().parents[1]
# Models exported here: name -> (FAMILIES entry, the options its micro export needs (the LSTM: no
# TILE), its files' precision).
MICRO_FAMILIES = {
    "dense_ae": ("dense_ae", {}, "int8"),
    # Batch-norm residual stages, as in the denoise and inpaint presets (folded into the convolutions).
    "conv_ae_residual": ("conv_ae_residual", {}, "int8"),
    # The denoise preset's code: on stage 0's 4 x 4 grid (1x1 convolution and reshapes, no dense layer),
    # with stage 1's map resized back up and added.
    "conv_ae_spatial": ("conv_ae_residual", {"code": "spatial", "code_stage": 0, "latent_dim": 16}, "int8"),
    # The GroupNorm option: TFLM runs its MEAN and RSQRT.
    "conv_ae_group_norm": ("conv_ae_residual", {"normalization": "group"}, "int8"),
    "lstm_ae": ("lstm_ae", {"repeat": "broadcast"}, "int16x8"),
    "transformer_ae": ("transformer_ae", {"activation": "relu"}, "int16x8"),
    "vae_dense": ("vae_dense", {}, "int8"),
}


def with_options(family, options):
    """A FAMILIES model with extra options, trained briefly on digits (as sequences if it reads them)."""
    digits = zoo.data.load("digits")
    data = digits.as_sequences() if FAMILIES[family][2] else digits
    return train_briefly(family, data, **options), data


@pytest.fixture(scope="module")
def micro_exports(tmp_path_factory):
    """{family: (model, data, micro folder)}: each exported once with micro_target=True."""
    root = tmp_path_factory.mktemp("micro")
    exports = {}
    for name, (family, options, _) in MICRO_FAMILIES.items():
        model, data = with_options(family, options)
        zoo_export(model, root / name, data)
        exports[name] = (model, data, root / name / micro.MICRO_DIR)
    return exports


def zoo_export(model, out_dir, data):
    from export import export_model

    # float32 for the main file: the micro files are int8 regardless, and it converts fastest.
    return export_model(
        model, out_dir, quantize="float32", calibration_data=data, calibration_samples=100, verify_samples=32,
        micro_target=True,
    )


def listing(folder):
    return json.loads((folder / micro.MICRO_FILE).read_text())["files"]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aezoo: error: "), err
    return lines[0]


def builtin_ops(path):
    """Op names of a .tflite file read with ai_edge_litert's schema (independent of the export's reader)."""
    from ai_edge_litert.schema_py_generated import BuiltinOperator, Model

    names = {value: key for key, value in vars(BuiltinOperator).items() if not key.startswith("_")}
    model = Model.GetRootAsModel(path.read_bytes(), 0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    return {names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())] for code in codes}


def runs_in_tflm(path, arena):
    """Whether a fresh process loads and invokes `path` in TFLM with `arena` bytes (a crash counts as no)."""
    script = textwrap.dedent(f"""
        from tflite_micro.python.tflite_micro import runtime
        interpreter = runtime.Interpreter.from_file({str(path)!r}, arena_size={arena})
        interpreter.invoke()
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == 0


# --- the micro/ folder -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", MICRO_FAMILIES)
def test_micro_folder_has_one_single_signature_file_per_board_signature(micro_exports, name):
    from ai_edge_litert.interpreter import Interpreter

    model, _, folder = micro_exports[name]
    precision = MICRO_FAMILIES[name][2]
    dtype = {"int8": "int8", "int16x8": "int16"}[precision]
    expected = ("reconstruct", "encode") + (("encode_distribution", "decode") if name.startswith("vae") else ())
    files = listing(folder)
    assert sorted(files) == sorted(micro.file_name(s, precision) for s in expected)
    for file, entry in files.items():
        path = folder / file
        assert list(Interpreter(model_path=str(path)).get_signature_list()) == [entry["signature"]]
        assert entry["flash_bytes"] == path.stat().st_size
        shape = model.data_shape if entry["signature"] != "decode" else (model.latent_dim,)
        assert tuple(entry["input_shape"]) == tuple(shape)
        assert entry["precision"] == precision
        assert entry["input"]["dtype"] == dtype and all(o["dtype"] == dtype for o in entry["outputs"])
        # Resolver registrations: one per op the file holds, TFLM's method names.
        assert sorted(entry["ops"]) == sorted(micro.resolver_registration(op) for op in builtin_ops(path))
        assert entry["verification"]["met"], (file, entry["verification"])


def test_resolver_registration_names():
    assert micro.resolver_registration("FULLY_CONNECTED") == "AddFullyConnected()"
    assert micro.resolver_registration("CONV_2D") == "AddConv2D()"
    assert micro.resolver_registration("MAX_POOL_2D") == "AddMaxPool2D()"
    assert micro.resolver_registration("BATCH_MATMUL") == "AddBatchMatMul()"


def test_arena_is_the_smallest_that_runs_plus_the_stated_margin(micro_exports):
    _, _, folder = micro_exports["dense_ae"]
    for file, entry in listing(folder).items():
        measured = entry["arena_measured_bytes"]
        assert entry["arena_bytes"] == micro.with_margin(measured) >= measured * (1 + micro.ARENA_MARGIN)
        # Measured in TFLM: it runs there, and one alignment step less does not.
        assert runs_in_tflm(folder / file, measured), file
        assert not runs_in_tflm(folder / file, measured - micro.ARENA_ALIGNMENT), file


def test_larger_model_needs_a_larger_arena(micro_exports):
    # The LSTM keeps per-step states; the dense model two small layers: the measurement tells them apart.
    dense = listing(micro_exports["dense_ae"][2])[micro.file_name("reconstruct")]["arena_measured_bytes"]
    lstm = listing(micro_exports["lstm_ae"][2])[micro.file_name("reconstruct", "int16x8")]["arena_measured_bytes"]
    assert lstm > 2 * dense


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: the C arrays cannot be compiled here")
def test_c_arrays_compile_and_hold_the_file_bytes_aligned(micro_exports, tmp_path):
    _, _, folder = micro_exports["vae_dense"]
    for file, entry in listing(folder).items():
        source = entry["c_source"]
        main = tmp_path / f"main_{source['array']}.cc"
        # A host program that writes the array back out and checks its alignment and length.
        main.write_text(textwrap.dedent(f"""
            #include <cstdint>
            #include <cstdio>
            #include "{source['header']}"
            int main() {{
              if (reinterpret_cast<std::uintptr_t>({source['array']}) % 16 != 0) return 3;
              return std::fwrite({source['array']}, 1, {source['length']}, stdout) == {source['length']} ? 0 : 4;
            }}
        """))
        objects = []
        for cc in (folder / source["source"], main):
            objects.append(tmp_path / (cc.stem + ".o"))
            subprocess.run(["g++", "-std=c++17", "-c", str(cc), "-I", str(folder), "-o", str(objects[-1])], check=True)
        binary = tmp_path / source["array"]
        subprocess.run(["g++", *map(str, objects), "-o", str(binary)], check=True)
        result = subprocess.run([str(binary)], capture_output=True)
        assert result.returncode == 0
        assert result.stdout == (folder / file).read_bytes()


# --- verification and running micro files ----------------------------------------------------------
def test_predict_runtime_micro_matches_the_reference_kernels(micro_exports, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model, data, folder = micro_exports["dense_ae"]
    path = folder / micro.file_name("encode")
    x = data.x_test[:16]
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run_cli(capsys, "predict", path, tmp_path / "x.npy", "--signature", "encode", "--runtime", "micro",
                           "-o", tmp_path / "codes.npy")
    assert code == 0 and "tflite-micro" in out
    codes = np.load(tmp_path / "codes.npy")

    runner = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF).get_signature_runner("encode")
    in_scale, in_zero = runner.get_input_details()["x"]["quantization"]
    out_scale, out_zero = runner.get_output_details()["code"]["quantization"]
    quantized = np.clip(np.round(x / in_scale + in_zero), -128, 127).astype(np.int8)
    reference = np.concatenate([runner(x=example[None])["code"] for example in quantized])
    steps = np.abs(np.round(codes / out_scale + out_zero) - reference)
    assert codes.shape == (16, model.latent_dim)
    assert steps.max() <= micro.CODE_STEPS_TARGET


def test_lstm_micro_files_keep_int16_activations_and_track_keras(micro_exports):
    # int8 states re-quantized at every time step drift from the float model; int16 ones stay close.
    # Measured on this model: int16x8 max 0.0021, mean 0.00025; all-int8 max 0.0062, mean 0.0014.
    model, data, folder = micro_exports["lstm_ae"]
    x = data.x_test[:32]
    board = micro_runtime.load(folder / micro.file_name("reconstruct", "int16x8"))
    drift = np.abs(board.reconstruct(x) - np.asarray(model(x)))
    assert drift.max() < 1 / 256  # within one int8 output step everywhere
    assert drift.mean() < 1 / 1024


def _zeroed_steps(data, steps):
    zeroed = {split: getattr(data, split).copy() for split in ("x_train", "x_test")}
    for x in zeroed.values():
        x[:, steps, :] = 0
    return dataclasses.replace(data, **zeroed)


def test_an_lstm_whose_first_step_is_always_zero_quantizes_int16x8(tmp_path):
    # The top row of a digit read as a sequence. Unrolled by Keras, that step had weights of its own,
    # which saw only zeros, and the int16x8 quantizer gave them an infinite scale; the export's
    # loop projects every step's input in one op.
    data = zoo.data.load("digits").as_sequences()
    model = zoo.create("lstm_ae", (8, 8), 4, units=[16], repeat="broadcast")
    zoo_export(model, tmp_path / "e", _zeroed_steps(data, 0))
    files = listing(tmp_path / "e" / micro.MICRO_DIR)
    assert sorted(files) == sorted(micro.file_name(s, "int16x8") for s in ("reconstruct", "encode"))
    assert all(entry["verification"]["met"] for entry in files.values())


def test_an_lstm_whose_state_is_always_zero_gets_int8_files_saying_why(tmp_path):
    # All-zero sequences keep an untrained LSTM's state at zero (its candidate bias is zero), so
    # the recurrent weights see only zeros: the int16x8 quantizer's infinite scale; int8 handles it.
    data = zoo.data.load("digits").as_sequences()
    model = zoo.create("lstm_ae", (8, 8), 4, units=[16], repeat="broadcast")
    zoo_export(model, tmp_path / "e", _zeroed_steps(data, slice(None)))
    files = listing(tmp_path / "e" / micro.MICRO_DIR)
    assert sorted(files) == sorted(micro.file_name(s, "int8") for s in ("reconstruct", "encode"))
    for entry in files.values():
        assert entry["precision"] == "int8" and "non-finite scale" in entry["precision_note"]
        assert entry["verification"]["met"]


def test_runtime_micro_refuses_the_wrong_signature_and_files_outside_micro(micro_exports, tmp_path, capsys):
    _, data, folder = micro_exports["dense_ae"]
    np.save(tmp_path / "x.npy", data.x_test[:2])
    line = one_line_error(*run_cli(capsys, "predict", folder / micro.file_name("encode"), tmp_path / "x.npy", "--runtime", "micro")[::2])
    assert "'encode' signature, not 'reconstruct'" in line and "model_reconstruct_* file" in line
    alone = tmp_path / "alone.tflite"
    shutil.copy(folder / micro.file_name("encode"), alone)
    line = one_line_error(*run_cli(capsys, "predict", alone, tmp_path / "x.npy", "--runtime", "micro")[::2])
    assert "micro.json" in line and "--micro" in line


# --- refusals --------------------------------------------------------------------------------------
def test_lstm_with_tile_is_refused_naming_the_op_and_the_option(tmp_path, capsys):
    # The refusal does not depend on the weights: an untrained model shows it (and saves minutes).
    model = zoo.create("lstm_ae", (8, 8), 8, units=[16])
    assert model.repeat == "tile"  # the default, unchanged
    model.save(tmp_path / "lstm.keras")
    out = tmp_path / "out"
    line = one_line_error(*run_cli(capsys, "export", tmp_path / "lstm.keras", "--out", out, "--quantize", "float32",
                                   "--calibration-data", "digits", "--micro")[::2])
    assert "TILE" in line and "repeat='broadcast'" in line
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_transformer_with_gelu_is_refused_naming_the_op_and_the_option(tmp_path):
    from export import export_model

    model = zoo.create("transformer_ae", (8, 8, 1), 8, **FAMILIES["transformer_ae"][1])
    with pytest.raises(ZooError, match=r"GELU.*activation='relu'") as refused:
        export_model(model, tmp_path / "out", quantize="float32", calibration_data="digits", calibration_samples=20,
                     verify_samples=4, micro_target=True)
    assert "\n" not in str(refused.value)


def test_micro_needs_calibration_data(tmp_path, capsys):
    model = zoo.create("dense_ae", (8, 8, 1), 4)
    model.save(tmp_path / "dense.keras")
    line = one_line_error(*run_cli(capsys, "export", tmp_path / "dense.keras", "--out", tmp_path / "out", "--micro")[::2])
    assert "--calibration-data" in line


# --- the model options that avoid TFLM's missing ops -------------------------------------------------
def test_broadcast_repeat_computes_what_repeatvector_does_with_the_same_weights(tmp_path):
    x = zoo.data.load("digits").as_sequences().x_test[:8]
    tile = zoo.create("lstm_ae", (8, 8), 4, units=[16])
    broadcast = zoo.create("lstm_ae", (8, 8), 4, units=[16], repeat="broadcast")
    broadcast.set_weights(tile.get_weights())
    np.testing.assert_allclose(broadcast(x), tile(x), atol=1e-6, rtol=0)
    broadcast.save(tmp_path / "broadcast.keras")
    reloaded = keras.models.load_model(tmp_path / "broadcast.keras")
    assert reloaded.get_config() == broadcast.get_config() and reloaded.repeat == "broadcast"
    np.testing.assert_array_equal(reloaded(x), broadcast(x))
    with pytest.raises(ZooError, match="repeat"):
        zoo.create("lstm_ae", (8, 8), 4, units=[16], repeat="loop")


def test_transformer_relu_option_saves_and_reloads_and_gelu_stays_the_default(tmp_path):
    x = zoo.data.load("digits").as_sequences().x_test[:8]
    options = {"embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32}
    assert zoo.create("transformer_ae", (8, 8), 4, **options).get_config()["activation"] == "gelu"
    relu = zoo.create("transformer_ae", (8, 8), 4, activation="relu", **options)
    gelu = zoo.create("transformer_ae", (8, 8), 4, **options)
    gelu.set_weights(relu.get_weights())
    assert not np.allclose(relu(x), gelu(x))  # the option changes the computation
    relu.save(tmp_path / "relu.keras")
    reloaded = keras.models.load_model(tmp_path / "relu.keras")
    np.testing.assert_array_equal(reloaded(x), relu(x))
    assert reloaded.get_config()["activation"] == "relu"
    with pytest.raises(ZooError, match="activation"):
        zoo.create("transformer_ae", (8, 8), 4, activation="swish", **options)


def test_the_microcontroller_preset_fits_its_board_and_flags_anomalies_like_keras(tmp_path):
    from sklearn.metrics import roc_auc_score

    from recipes.tasks.anomaly import reconstruction_error
    from recipes.tools.build_presets import MICRO_LIMITS

    name = "dense_ae_co2_micro"
    card = zoo.presets.preset_info(name)
    assert cli.main(["export", name, "--out", str(tmp_path / "e"), "--quantize", "float32", "--micro"]) == 0
    files = json.loads((tmp_path / "e" / "micro" / "micro.json").read_text())["files"]
    assert set(files) == set(card["micro"])
    for file, entry in files.items():
        assert entry["verification"]["met"]
        for key, limit in MICRO_LIMITS.items():
            assert entry[key] <= limit
            assert entry[key] == pytest.approx(card["micro"][file][key], rel=0.05), (file, key)

    # The board's int8 model, one window per invoke in TFLM, ranks the test windows as Keras does.
    data = zoo.data.load("co2")
    board = micro_runtime.load(tmp_path / "e" / "micro" / "model_reconstruct_int8.tflite")
    board_errors = np.mean((board.reconstruct(data.x_test) - data.x_test) ** 2, axis=(1, 2))
    keras_auc = roc_auc_score(data.y_test, reconstruction_error(zoo.from_preset(name), data.x_test))
    assert roc_auc_score(data.y_test, board_errors) >= keras_auc - 0.02
    assert keras_auc == pytest.approx(card["metrics"]["ROC-AUC"]["autoencoder"], abs=1e-3)
