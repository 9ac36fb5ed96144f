"""GPU delegate compatibility (export.builder.gpu_delegate): hand-built .tflite files with an op the
delegate lacks, or a 5-D tensor, are flagged per signature; float16 files of supported ops pass (their
weights' DEQUANTIZE folded as the delegate does); every float file of an export records the verdict."""

import contextlib
import io
import json

import numpy as np
import pytest

from export import export_model, runtime
from export.builder import gpu_delegate
from zoo.backend import import_tensorflow

tf = import_tensorflow("the GPU delegate tests")


class _Graphs(tf.Module):
    """One signature per case, on a [1, 8] input."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.constant(rng.standard_normal((3, 3, 2, 4)).astype("float32"))
        self.dense = tf.constant(rng.standard_normal((64, 8)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def supported(self, x):
        image = tf.reshape(x, [1, 2, 2, 2])
        conv = tf.nn.conv2d(image, self.kernel, strides=1, padding="SAME")
        return {"y": tf.nn.relu(tf.matmul(tf.reshape(conv, [1, 16]), self.dense[:16])) * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def top_k(self, x):
        return {"y": tf.math.top_k(x, 3).values}

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def five_d(self, x):
        return {"y": tf.reshape(tf.reshape(x, [1, 2, 2, 2, 1]) * 2.0 + 1.0, [1, 8])}


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    """content(signatures, float16=False): a .tflite file of those `_Graphs` signatures."""
    graphs = _Graphs()
    folder = tmp_path_factory.mktemp("graphs") / "saved_model"
    tf.saved_model.save(graphs, str(folder), signatures={name: getattr(graphs, name) for name in
                                                         ("supported", "top_k", "five_d")})

    def content(signatures, float16=False):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=list(signatures))
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()

    return content


def test_an_op_the_delegate_lacks_is_flagged_in_its_signature_only(tflite_file):
    verdict = gpu_delegate.check(tflite_file(["supported", "top_k"]))
    assert not verdict.compatible
    assert verdict.ops == ("TOPK_V2",)
    entry = verdict.to_json()
    assert entry["compatible"] is False and entry["ops"] == ["TOPK_V2"]
    assert entry["reasons"]["TOPK_V2"]["signatures"] == ["top_k"]  # the subgraph after the first is checked too


def test_a_five_dimensional_tensor_is_flagged(tflite_file):
    verdict = gpu_delegate.check(tflite_file(["five_d"]))
    assert not verdict.compatible
    assert "RESHAPE" in verdict.ops
    assert all("5-D tensor" in issue.reason for issue in verdict.issues)


@pytest.mark.parametrize("float16", [False, True])
def test_supported_ops_pass_in_float32_and_float16(tflite_file, float16):
    from export.builder import convert

    content = tflite_file(["supported"], float16)
    ops = convert.op_names(content)
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(ops)
    assert ("DEQUANTIZE" in ops) == float16  # float16 weights: the fold of their DEQUANTIZE is exercised
    assert gpu_delegate.check(content).to_json() == {"compatible": True}


def test_group_normalisation_is_flagged_with_the_option_that_avoids_it(tmp_path):
    import zoo
    from export.builder import convert

    model = zoo.create("conv_ae", input_shape=(8, 8, 1), latent_dim=4, filters=[4, 8], normalization="group")
    convert.write_saved_model(convert.export_copy(model, gpu_form=True), tmp_path / "source", batch_size=1,
                              reconstruct_key="reconstruct")
    entry = gpu_delegate.check(convert.convert(tmp_path / "source", ["reconstruct"], "float16")).to_json()
    assert entry["compatible"] is False
    assert all("5-D tensor" in reason["reason"] for reason in entry["reasons"].values())
    assert "normalization='batch'" in entry["fix"]


def test_the_installed_analyzer_does_not_check_gpu_compatibility(tflite_file):
    """Why the zoo checks itself: TensorFlow's analyzer calls a TOPK_V2 file compatible. When this
    fails, the installed analyzer checks again: compare it with `gpu_delegate.check` and prefer it."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tf.lite.experimental.Analyzer.analyze(model_content=tflite_file(["top_k"]), gpu_compatibility=True)
    assert "TOPK_V2" in printed.getvalue()  # it did read the file
    assert "GPU COMPATIBILITY WARNING" not in printed.getvalue()


def test_export_records_the_verdict_of_every_float_file(tmp_path):
    import zoo

    model = zoo.create("dense_ae", input_shape=(8, 8, 1), latent_dim=4, hidden_units=[16])
    export_model(model, tmp_path / "export", quantize="float32,float16", verify_samples=4)
    files = json.loads((tmp_path / "export" / runtime.METADATA_FILE).read_text())["files"]
    assert files["model_float32.tflite"]["gpu_delegate"] == {"compatible": True}
    assert files["model_float16.tflite"]["gpu_delegate"] == {"compatible": True}
    assert "gpu_delegate" not in files["saved_model"]


@pytest.mark.slow  # converts a shipped preset
def test_the_conv_presets_float16_file_passes(tmp_path):
    from export.builder import convert
    from zoo import from_preset

    copy = convert.export_copy(from_preset("conv_ae_fashion_mnist"))
    convert.write_saved_model(copy, tmp_path / "source", batch_size=1, reconstruct_key="reconstruct")
    content = convert.convert(tmp_path / "source", convert.signature_names(copy), "float16")
    assert {"CONV_2D", "DEQUANTIZE"} <= set(convert.op_names(content))
    assert gpu_delegate.check(content).to_json() == {"compatible": True}
