"""Exports of the autoencoder types (vq_vae, cvae, aae, wae, masked_ae): their signatures in float32 and
int8 TFLite files (ONNX, TFLite Micro where it runs them), verified against Keras, and run back through
the edge runtime with the right dtypes and shapes: a vq_vae's int32 indices, a cvae's labels."""

import json

import keras
import numpy as np
import pytest

import zoo
from export import export_model, micro
from export.builder import tflite_metadata
from export.edge import runtime
from zoo.errors import ZooError

pytestmark = pytest.mark.slow  # trains and exports five models (TFLite, ONNX, TFLite Micro)

SHAPE = (8, 8, 1)
DENSE = {"backbone": "dense", "backbone_config": {"hidden_units": [32]}}
# name -> (options, extra export targets)
TYPES = {
    "vq_vae": ({"backbone": "conv", "backbone_config": {"filters": [8, 16]}, "codebook_size": 16, "code_dim": 4},
               {"onnx": True, "micro_target": True}),
    "cvae": ({**DENSE, "latent_dim": 2, "num_classes": 10}, {"onnx": True}),
    "aae": ({**DENSE, "latent_dim": 4}, {}),
    "wae": ({**DENSE, "latent_dim": 4}, {"micro_target": True}),
    "masked_ae": ({"backbone": "transformer", "latent_dim": 4, "backbone_config": {
        "embed_dim": 16, "num_heads": 2, "num_layers": 1, "ff_dim": 32, "patch_size": 2, "activation": "relu"}}, {}),
}
SIGNATURES = {
    "vq_vae": ["reconstruct", "encode", "decode"],
    "cvae": ["reconstruct", "encode", "decode", "encode_distribution", "sample"],
    "aae": ["reconstruct", "encode", "decode", "sample"],
    "wae": ["reconstruct", "encode", "decode", "sample"],
    "masked_ae": ["reconstruct", "encode", "decode"],
}
FILES = ("model_float32.tflite", "model_int8.tflite")
N = 5  # examples run through the runtime (more than the batch of 1: the runtime splits them)


def trained(name, digits):
    options, _ = TYPES[name]
    keras.utils.set_random_seed(0)
    model = zoo.create(name, input_shape=SHAPE, seed=0, **options)
    model.compile(keras.optimizers.Adam(3e-3), run_eagerly=True)
    model.fit(digits.x_train[:128], digits.y_train[:128] if name == "cvae" else None, batch_size=32, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def exports(digits, tmp_path_factory):
    """{name: (model, export folder, report)}, each type exported once in float32 and int8."""
    root = tmp_path_factory.mktemp("types")
    result = {}
    for name, (_, targets) in TYPES.items():
        model = trained(name, digits)
        report = export_model(model, root / name, quantize="float32,int8", calibration_data=digits,
                              calibration_samples=64, verify_samples=32, **targets)
        result[name] = (model, root / name, report)
    return result


@pytest.mark.parametrize("name", TYPES)
def test_type_exports_its_signatures_verified_against_keras(exports, name):
    _, folder, report = exports[name]
    metadata = json.loads((folder / runtime.METADATA_FILE).read_text())
    assert report.missed == []
    assert list(metadata["signatures"]) == SIGNATURES[name]
    for file in FILES:
        entry = metadata["files"][file]
        assert sorted(entry["signatures"]) == sorted(SIGNATURES[name]) and entry["verification"]["met"]
    inputs = {s: spec["inputs"] for s, spec in metadata["signatures"].items()}
    assert all(names == (["x" if s in ("reconstruct", "encode", "encode_distribution") else "z" if s == "decode" else "eps",
                          *(["labels"] if name == "cvae" else [])]) for s, names in inputs.items())


@pytest.mark.parametrize("name", TYPES)
def test_metadata_inside_each_file_says_what_each_tensor_holds(exports, name):
    _, folder, _ = exports[name]
    metadata = json.loads((folder / runtime.METADATA_FILE).read_text())
    for file in FILES:
        written, _ = tflite_metadata.read((folder / file).read_bytes())
        assert written == metadata["files"][file]["embedded_metadata"]
        assert sorted(written["signatures"]) == sorted(SIGNATURES[name])
        tensors = {(s, t): value for s, entry in written["signatures"].items()
                   for t, value in {**entry["inputs"], **entry["outputs"]}.items()}
        if name == "vq_vae":
            assert tensors["encode", "code"]["range"] == tensors["decode", "z"]["range"] == [0.0, 15.0]
            assert "codebook indices" in tensors["encode", "code"]["description"]
        if name == "cvae":
            assert tensors["reconstruct", "labels"]["range"] == [0.0, 9.0]
            assert tensors["reconstruct", "labels"]["dimension_names"] == ["batch"]


def test_float_files_record_whether_the_gpu_delegate_takes_them(exports):
    for name, (_, folder, _) in exports.items():
        entry = json.loads((folder / runtime.METADATA_FILE).read_text())["files"]["model_float32.tflite"]["gpu_delegate"]
        if name != "vq_vae":
            assert entry == {"compatible": True}, name
            continue
        # The nearest-codebook search and the lookup of 2-D indices: no GPU kernels, no option avoids them.
        assert entry["compatible"] is False and entry["ops"] == ["ARG_MIN", "GATHER"]
        assert entry["reasons"]["ARG_MIN"]["signatures"] == ["encode", "reconstruct"]
        assert entry["reasons"]["GATHER"]["signatures"] == ["decode", "reconstruct"]
        assert "no model option" in entry["fix"]


@pytest.mark.parametrize("file", FILES)
def test_vq_vae_runtime_gives_and_takes_int32_indices(exports, digits, file):
    model, folder, _ = exports["vq_vae"]
    edge = runtime.load(folder / file)
    x = digits.x_test[:N]
    indices = edge.encode(x)
    assert edge.discrete_codes and edge.latent_dim is None and edge.code_shape == model.index_shape
    assert indices.dtype == np.int32 and indices.shape == (N, *model.index_shape)
    assert indices.min() >= 0 and indices.max() < model.codebook_size
    assert np.mean(indices == np.asarray(model.encode(x))) >= 0.9
    images = edge.decode(indices)
    assert images.dtype == np.float32 and images.shape == (N, *SHAPE)
    np.testing.assert_allclose(images, np.asarray(model.decode(indices)), atol=0.05)
    described = edge.describe_signatures()
    assert described["encode"]["outputs"]["code"]["dtype"] == "int32"
    assert described["decode"]["inputs"]["z"]["dtype"] == "int32"  # not quantized, int8 file or not
    with pytest.raises(runtime.EdgeError, match="expects int code indices"):
        edge.decode(indices.astype("float32"))
    with pytest.raises(runtime.EdgeError, match=r"must lie in \[0, 16\)"):
        edge.decode(np.full_like(indices, model.codebook_size))


def test_vq_vae_int8_and_micro_encode_agree_with_keras_on_the_indices(exports):
    _, folder, _ = exports["vq_vae"]
    metadata = json.loads((folder / runtime.METADATA_FILE).read_text())
    verification = metadata["files"]["model_int8.tflite"]["verification"]
    assert verification["index_agreement"]["encode"] >= 0.99 and "encode" not in verification["max_abs_diff"]
    assert metadata["code"] == {"shape": [2, 2], "dtype": "int32", "codebook_size": 16}
    listing = json.loads((folder / micro.MICRO_DIR / micro.MICRO_FILE).read_text())["files"]
    assert sorted(listing) == ["model_encode_int8.tflite", "model_reconstruct_int8.tflite"]
    # TFLM against the reference kernels: a 1-step rounding difference flips a near-tie now and then.
    encode = listing["model_encode_int8.tflite"]["verification"]
    assert encode["index_agreement"] >= 0.9 and encode["met"] == (encode["index_agreement"] >= micro.INDEX_AGREEMENT_TARGET)
    assert "AddArgMin()" in listing["model_encode_int8.tflite"]["ops"]


def test_vq_vae_int8_file_keeps_its_code_vectors_float_and_the_first_convolution_int8(exports):
    from tensorflow.lite.python.schema_py_generated import TensorType
    from tensorflow.lite.tools import flatbuffer_utils

    from export.builder import convert

    _, folder, _ = exports["vq_vae"]
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray((folder / "model_int8.tflite").read_bytes()))
    code_vectors = list(convert.code_vector_tensors(model))  # the code head's and the trunk's last op's outputs
    encoding = {id(subgraph): subgraph for subgraph, _ in code_vectors}
    assert len(encoding) == 2 and len(code_vectors) == 4  # reconstruct and encode
    assert all(subgraph.tensors[t].type == TensorType.FLOAT32 for subgraph, t in code_vectors)
    for subgraph in encoding.values():
        assert subgraph.tensors[subgraph.operators[0].outputs[0]].type == TensorType.INT8


def test_vq_vae_onnx_encode_gives_int32_indices(exports, digits):
    model, folder, _ = exports["vq_vae"]
    edge = runtime.load(folder / "onnx" / "encode.onnx")
    indices = edge.encode(digits.x_test[:N])
    assert indices.dtype == np.int32
    np.testing.assert_array_equal(indices, np.asarray(model.encode(digits.x_test[:N])))


@pytest.mark.parametrize("file", [*FILES, "onnx/reconstruct.onnx"])
def test_cvae_runtime_takes_class_labels(exports, digits, file):
    model, folder, _ = exports["cvae"]
    edge = runtime.load(folder / file)
    x, labels = digits.x_test[:N], digits.y_test[:N]
    assert edge.conditional and edge.code_shape == (2,)
    codes = edge.encode(x, labels)
    assert codes.dtype == np.float32 and codes.shape == (N, 2)
    np.testing.assert_allclose(codes, np.asarray(model.encode(x, labels)), atol=0.1)
    assert edge.reconstruct(x, labels).shape == (N, *SHAPE)
    z_mean, z_log_var = edge.encode_distribution(x, labels)
    assert z_mean.shape == z_log_var.shape == (N, 2)
    # Another class changes the decoding of the same code.
    assert np.abs(edge.decode(codes, np.zeros(N, int)) - edge.decode(codes, np.ones(N, int))).max() > 0.01
    samples = edge.sample(3, seed=0, labels=7)
    assert samples.shape == (3, *SHAPE) and samples.dtype == np.float32
    with pytest.raises(runtime.EdgeError, match="pass labels"):
        edge.reconstruct(x)
    with pytest.raises(runtime.EdgeError, match=r"labels must lie in \[0, 10\)"):
        edge.encode(x, np.full(N, 10))
    with pytest.raises(runtime.EdgeError, match="one class id per example"):
        edge.encode(x, labels[:2])


def test_cvae_micro_export_is_refused_in_one_line(exports, digits, tmp_path):
    model = exports["cvae"][0]
    with pytest.raises(ZooError, match="cvae's signatures take two") as error:
        export_model(model, tmp_path / "micro", calibration_data=digits, micro_target=True)
    assert "\n" not in str(error.value) and not (tmp_path / "micro").exists()


@pytest.mark.parametrize("name", ["aae", "wae", "masked_ae"])
@pytest.mark.parametrize("file", FILES)
def test_deterministic_types_encode_decode_and_sample(exports, digits, name, file):
    model, folder, _ = exports[name]
    edge = runtime.load(folder / file)
    x = digits.x_test[:N]
    codes = edge.encode(x)
    assert codes.dtype == np.float32 and codes.shape == (N, model.latent_dim)
    np.testing.assert_allclose(codes, np.asarray(model.encode(x)), atol=0.15 if "int8" in file else 1e-4)
    assert edge.decode(codes).shape == edge.reconstruct(x).shape == (N, *SHAPE)
    if name == "masked_ae":  # no prior to sample
        with pytest.raises(runtime.EdgeError, match="no 'sample' signature"):
            edge.sample(2)
    else:
        assert edge.sample(3, seed=0).shape == (3, *SHAPE)
    with pytest.raises(runtime.EdgeError, match="takes no labels"):
        edge.encode(x, np.zeros(N, int))


def test_wae_micro_files_include_the_prior_decoder(exports):
    _, folder, _ = exports["wae"]
    listing = json.loads((folder / micro.MICRO_DIR / micro.MICRO_FILE).read_text())["files"]
    assert sorted(entry["signature"] for entry in listing.values()) == ["decode", "encode", "reconstruct"]
    assert all(entry["verification"]["met"] for entry in listing.values())


def test_verifys_runner_runs_every_types_files_on_their_reference_inputs_a_cvaes_with_its_labels(exports, tmp_path):
    """`aezoo verify` runs export.edge.run_files on each export: each type's outputs come back as the export's."""
    from export.edge import run_files

    for name, (_, folder, _) in exports.items():
        run_files.run_export(folder, tmp_path / name, timing_runs=1)
        run = json.loads((tmp_path / name / "run.json").read_text())
        assert all(entry["ms"] > 0 for entry in run["files"].values()), name
        with np.load(tmp_path / name / "outputs.npz") as outputs, np.load(folder / run_files.REFERENCE_FILE) as reference:
            assert {key.split("/")[1] for key in outputs.files} == set(SIGNATURES[name]), name
            for key in outputs.files:
                if key.startswith("model_float32.tflite/"):
                    np.testing.assert_allclose(outputs[key], reference[key], atol=1e-5, err_msg=f"{name} {key}")


def arg_min_input_types(path):
    """The tensor type names of every ARG_MIN's first input, in every subgraph of a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    arg_min = [i for i, code in enumerate(model.operatorCodes)
               if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.ARG_MIN]
    type_names = {value: key for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
    return [type_names[graph.tensors[op.inputs[0]].type] for graph in model.subgraphs for op in graph.operators
            if op.opcodeIndex in arg_min]


def test_a_conv_vq_vaes_int8_file_keeps_its_codebook_distances_in_float32(exports):
    _, folder, _ = exports["vq_vae"]
    assert arg_min_input_types(folder / "model_int8.tflite") == ["FLOAT32", "FLOAT32"]  # encode and reconstruct
    int8 = json.loads((folder / runtime.METADATA_FILE).read_text())["files"]["model_int8.tflite"]
    assert "CONV_2D" in int8["ops"] and int8["signatures"]["reconstruct"]["inputs"]["x"]["dtype"] == "int8"
