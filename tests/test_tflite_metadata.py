"""TFLite metadata inside exported files (export.builder.tflite_metadata): read back with MediaPipe's
MetadataDisplayer it equals what the export wrote (metadata.json `embedded_metadata`), the model card
is packed in the file, and the metadata changes no output. tests/test_export.py and
tests/test_export_types.py read it back from every family's and autoencoder type's files."""

import json
import sys

import numpy as np
import pytest

from export import export_model, runtime
from export.builder import tflite_metadata
from export.builder.exporter import REFERENCE_FILE, tflite_name
from zoo.errors import ZooError

CARD = "---\nlicense: mit\ntags:\n- autoencoder-zoo\n---\n# dense_ae on digits\n\nA card.\n"
MODES = ("float32", "int8")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    import zoo

    digits = zoo.data.load("digits")
    keras.utils.set_random_seed(0)
    model = zoo.create("dense_ae", input_shape=digits.input_shape, latent_dim=4, hidden_units=(16,))
    card = tmp_path_factory.mktemp("card") / "README.md"
    card.write_text(CARD)
    out_dir = tmp_path_factory.mktemp("export") / "export"
    report = export_model(model, out_dir, quantize=",".join(MODES), calibration_data=digits, calibration_samples=32,
                          verify_samples=8, card=card)
    return model, out_dir, report


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_metadata_read_back_equals_what_the_export_wrote(exported, mode):
    model, out_dir, _ = exported
    entry = json.loads((out_dir / runtime.METADATA_FILE).read_text())["files"][tflite_name(mode)]
    written, card = tflite_metadata.read((out_dir / tflite_name(mode)).read_bytes())
    assert written == entry["embedded_metadata"]
    assert card == CARD
    assert (written["name"], written["author"], written["license"]) == ("dense_ae", tflite_metadata.AUTHOR, "mit")
    assert written["version"].startswith("autoencoder-zoo ")
    assert list(written["signatures"]) == _signature_per_subgraph(out_dir / tflite_name(mode))
    x = written["signatures"]["reconstruct"]["inputs"]["x"]
    assert (x["dimension_names"], x["range"]) == (["batch", "height", "width", "channels"], [0.0, 1.0])
    assert list(written["signatures"]["encode"]["outputs"]) == ["code"]
    assert written["signatures"]["decode"]["inputs"]["z"]["dimension_names"] == ["batch", "code"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_metadata_changes_no_output(exported, mode, tmp_path):
    """The file's outputs equal those of the same model without its metadata and card, bit for bit."""
    from tensorflow.lite.tools import flatbuffer_utils

    _, out_dir, report = exported
    assert not report.missed  # verified against Keras with the metadata in
    content = (out_dir / tflite_name(mode)).read_bytes()
    bare = flatbuffer_utils.convert_bytearray_to_object(content)
    bare.metadata = [entry for entry in bare.metadata if entry.name.decode() != "TFLITE_METADATA"]
    flatbuffer_utils.write_model(bare, str(tmp_path / "bare.tflite"))
    assert b"TFLITE_METADATA" not in (tmp_path / "bare.tflite").read_bytes()
    x = np.load(out_dir / REFERENCE_FILE)["inputs/x"][:4]
    with_metadata, without = runtime.load(out_dir / tflite_name(mode)), runtime.load(tmp_path / "bare.tflite")
    for signature in ("reconstruct", "encode"):
        expected = without.run(signature, x)
        for name, value in with_metadata.run(signature, x).items():
            np.testing.assert_array_equal(value, expected[name])


@pytest.mark.slow
def test_embedding_again_gives_the_same_bytes(exported, tmp_path):
    """The exported file is its model with what metadata.json records embedded: embed() on the file
    without metadata and card gives its bytes again (no clock or path in them)."""
    from tensorflow.lite.tools import flatbuffer_utils

    _, out_dir, _ = exported
    path = out_dir / tflite_name("int8")
    bare = flatbuffer_utils.read_model(str(path))
    bare.metadata = [entry for entry in bare.metadata if entry.name.decode() != "TFLITE_METADATA"]
    flatbuffer_utils.write_model(bare, str(tmp_path / "bare.tflite"))
    entry = json.loads((out_dir / runtime.METADATA_FILE).read_text())["files"][path.name]
    again = tflite_metadata.embed((tmp_path / "bare.tflite").read_bytes(), entry["embedded_metadata"], CARD)
    assert again == path.read_bytes()


def _signature_per_subgraph(path):
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    keys = {signature.subgraphIndex: signature.signatureKey.decode() for signature in model.signatureDefs}
    return [keys[index] for index in range(len(model.subgraphs))]


def test_min_parser_version_follows_the_schema_history():
    import flatbuffers

    fb = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")

    def version(**fields):
        meta = fb.ModelMetadataT()
        subgraph = fb.SubGraphMetadataT()
        meta.subgraphMetadata = [subgraph]
        card = fb.AssociatedFileT()
        card.name, card.version = "card.md", fields.get("file_version")
        meta.associatedFiles = [card]
        if fields.get("custom"):
            subgraph.customMetadata = [fb.CustomMetadataT()]
        builder = flatbuffers.Builder(0)
        builder.Finish(meta.Pack(builder), b"M001")
        return tflite_metadata.min_parser_version(builder.Output())

    assert version() == "1.0.0"
    assert version(file_version="2") == "1.4.1"
    assert version(custom=True, file_version="2") == "1.5.0"


def test_export_without_the_metadata_writer_is_one_line_error(monkeypatch, tmp_path):
    import zoo

    # Every mediapipe module an earlier test imported goes (restored afterwards), and importing the
    # package fails as if it were not installed.
    for name in [name for name in sys.modules if name.split(".")[0] == "mediapipe"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    model = zoo.create("dense_ae", input_shape=(8,), latent_dim=2, hidden_units=(4,))
    with pytest.raises(ZooError) as raised:
        export_model(model, tmp_path / "out", quantize="float32")
    assert "autoencoder-zoo[metadata]" in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()
