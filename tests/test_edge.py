"""Edge export, board side: a virtualenv with numpy<2 and tflite-runtime and no TensorFlow, set up
with the documented `pip install --no-deps` command, runs the exported float32 and int8 files of
every family through `aezoo predict` and the Python API and matches the outputs saved at export.

The virtualenv is cached at $AEZOO_EDGE_VENV (default: .venv-edge-test in the checkout) and
the checkout is reinstalled into it whenever the files it ships change.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from export_helpers import FAMILIES, session_exports

from export.builder.exporter import tflite_name

pytestmark = [pytest.mark.slow, pytest.mark.edge]

ROOT = Path(__file__).resolve().parents[1]
# The board install of docs/boards.md, with the checkout in place of the package index's copy.
EDGE_REQUIREMENTS = ["numpy<2", "pillow", "tflite-runtime"]
# Their versions as last passed; AEZOO_EDGE_CONSTRAINTS="" installs the newest (.ci/refresh-constraints).
EDGE_CONSTRAINTS = os.environ.get("AEZOO_EDGE_CONSTRAINTS", str(ROOT / "constraints-edge.txt"))
INSTALLED_SOURCES = ["pyproject.toml", "recipes/__init__.py", "recipes/cli/__init__.py", "recipes/cli/main.py",
                     "export/__init__.py", *(f"export/edge/{name}.py" for name in (  # what `aezoo predict` runs
                         "__init__", "interpreter", "runtime", "onnx_runtime", "micro_runtime", "predict", "tflite_file"))]
# int8 outputs of tflite_runtime 2.14 and ai_edge_litert differ by up to one quantization step, and on
# attention models (their int8 softmax/GELU kernels differ) by up to seven over the 64 verification
# examples reference.npz holds (six over the first eight), about one on average.
INT8_MAX_STEPS, INT8_MEAN_STEPS = 8, 2


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    return session_exports(tmp_path_factory)  # the same as tests/test_export.py's


@pytest.fixture(scope="session")
def edge_venv():
    """bin/ of the TensorFlow-free virtualenv, created or refreshed with the documented command."""
    if sys.version_info >= (3, 12):
        pytest.fail("tflite-runtime 2.14 needs Python <= 3.11: run the edge tests with such an interpreter")
    venv = Path(os.environ.get("AEZOO_EDGE_VENV", ROOT / ".venv-edge-test"))
    bin_dir = venv / "bin"
    stamp = venv / "aezoo-sources.sha256"
    sources = [ROOT / name for name in INSTALLED_SOURCES] + ([Path(EDGE_CONSTRAINTS)] if EDGE_CONSTRAINTS else [])
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    if not (bin_dir / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.exists() or stamp.read_text() != digest:
        pins = ["-c", EDGE_CONSTRAINTS] if EDGE_CONSTRAINTS else []
        command = [str(bin_dir / "pip"), "install", "--quiet", "--no-deps", str(ROOT), *EDGE_REQUIREMENTS, *pins]
        subprocess.run(command, check=True, cwd=venv)
        stamp.write_text(digest)
    return bin_dir


def run_edge(bin_dir, program, *args, check=True):
    """Runs bin_dir/program (python, aezoo) outside the checkout, so only the installed copy is found."""
    return subprocess.run(
        [str(bin_dir / program), *map(str, args)], capture_output=True, text=True, check=check, cwd=bin_dir.parent
    )


def test_edge_venv_has_tflite_runtime_and_no_tensorflow(edge_venv):
    probe = run_edge(edge_venv, "python", "-c", "import tensorflow", check=False)
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
    script = (
        "import sys, numpy; from export import runtime as r; print(r.find_interpreter(), numpy.__version__);"
        "assert not [m for m in ('tensorflow', 'keras', 'zoo') if m in sys.modules]"
    )
    interpreter, numpy_version = run_edge(edge_venv, "python", "-c", script).stdout.split(" ")[-2:]
    assert run_edge(edge_venv, "python", "-c", "import export; print(export.__file__)").stdout.startswith(
        str(edge_venv.parent)
    )
    assert interpreter.startswith("2.14") and numpy_version.startswith("1.")


# Run inside the edge venv: every signature of each file on the saved reference inputs.
COMPARE_SCRIPT = """
import json, sys
import numpy as np
from export import runtime
results = {}
for path in sys.argv[1:]:
    model = runtime.load(path)
    reference = np.load(model.path.parent / "reference.npz")
    inputs = {name: reference[f"inputs/{name}"] for name in ("x", "z", "eps")}
    for signature in model.signatures:
        outputs = model.run(signature, inputs[runtime.SIGNATURES[signature].input])
        for name, value in outputs.items():
            results[f"{path}:{signature}/{name}"] = {
                "vs_keras": float(np.abs(value - reference[f"keras/{signature}/{name}"]).max()),
                "vs_export": float(np.abs(value - reference[f"{model.path.name}/{signature}/{name}"]).max()),
                "vs_export_mean": float(np.abs(value - reference[f"{model.path.name}/{signature}/{name}"]).mean()),
                "runtime": str(model.runtime),
            }
    if "sample" in model.signatures:
        results[f"{path}:sample(3)"] = {"shape": list(model.sample(3, seed=0).shape)}
print(json.dumps(results))
"""


def output_scale(out_dir, file_name, signature, output):
    metadata = json.loads((out_dir / "metadata.json").read_text())
    return metadata["files"][file_name]["signatures"][signature]["outputs"][output]["scale"]


def test_python_api_matches_outputs_saved_at_export(edge_venv, exports):
    paths = [exported.out_dir / tflite_name(mode) for exported in exports.values() for mode in ("float32", "int8")]
    results = json.loads(run_edge(edge_venv, "python", "-c", COMPARE_SCRIPT, *paths).stdout)
    checked = 0
    for key, result in results.items():
        path, output = key.rsplit(":", 1)
        if output == "sample(3)":
            assert result["shape"][0] == 3
            continue
        assert result["runtime"] == "tflite_runtime 2.14.0"
        if path.endswith(tflite_name("float32")):
            assert result["vs_keras"] <= 1e-4, key
        else:
            step = output_scale(Path(path).parent, Path(path).name, *output.split("/"))
            assert result["vs_export"] <= INT8_MAX_STEPS * step + 1e-6, key
            assert result["vs_export_mean"] <= INT8_MEAN_STEPS * step, key
        checked += 1
    outputs_per_file = {name: 6 if name.startswith("vae") else 3 for name in exports}
    assert checked == 2 * sum(outputs_per_file.values())  # every output of every signature of both files


@pytest.mark.parametrize("name", FAMILIES)
def test_aezoo_predict_matches_outputs_saved_at_export(edge_venv, exports, tmp_path, name):
    out_dir = exports[name].out_dir
    reference = np.load(out_dir / "reference.npz")
    np.save(tmp_path / "x.npy", reference["inputs/x"])
    for mode in ("float32", "int8"):
        file_name = tflite_name(mode)
        result = run_edge(edge_venv, "aezoo", "predict", out_dir / file_name, tmp_path / "x.npy", "-o", tmp_path / f"{mode}.npy")
        assert "tflite_runtime 2.14.0" in result.stdout
        recon = np.load(tmp_path / f"{mode}.npy")
        if mode == "float32":
            np.testing.assert_allclose(recon, reference["keras/reconstruct/reconstruction"], atol=1e-4)
        else:
            step = output_scale(out_dir, file_name, "reconstruct", "reconstruction")
            saved = reference[f"{file_name}/reconstruct/reconstruction"]
            np.testing.assert_allclose(recon, saved, atol=INT8_MAX_STEPS * step + 1e-6)
            assert np.abs(recon - saved).mean() <= INT8_MEAN_STEPS * step


def test_png_in_png_out_on_the_board(edge_venv, exports, tmp_path):
    from PIL import Image

    exported = exports["conv_ae"]
    Image.fromarray(np.round(exported.data.x_test[0, ..., 0] * 255).astype("uint8")).save(tmp_path / "digit.png")
    run_edge(edge_venv, "aezoo", "predict", exported.out_dir / tflite_name("int8"), tmp_path / "digit.png", "-o", tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").size == (8, 8)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aezoo: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_dynamic_range_file_is_refused_naming_ai_edge_litert(edge_venv, exports, tmp_path):
    np.save(tmp_path / "x.npy", exports["dense_ae"].data.x_test[:2])
    result = run_edge(edge_venv, "aezoo", "predict", exports["dense_ae"].out_dir / tflite_name("dynamic"), tmp_path / "x.npy", check=False)
    assert_one_line_error(result, "needs TFLite runtime >= 2.17", "tflite_runtime 2.14.0", "pip install ai-edge-litert")


def test_interpreter_op_version_error_is_one_line_too(edge_venv, exports, tmp_path):
    # The same file claiming an old min_runtime_version gets past the check and fails in the interpreter.
    content = (exports["dense_ae"].out_dir / tflite_name("dynamic")).read_bytes()
    claimed = content.replace(b"2.17.0\x00", b"1.14.0\x00", 1)
    assert claimed != content
    (tmp_path / "model.tflite").write_bytes(claimed)
    np.save(tmp_path / "x.npy", exports["dense_ae"].data.x_test[:2])
    result = run_edge(edge_venv, "aezoo", "predict", tmp_path / "model.tflite", tmp_path / "x.npy", check=False)
    assert_one_line_error(result, "pip install ai-edge-litert")


def test_truncated_file_is_refused_before_the_interpreter(edge_venv, exports, tmp_path):
    # tflite_runtime 2.14 crashes on a truncated model; the runtime must refuse it first.
    content = (exports["lstm_ae"].out_dir / tflite_name("int8")).read_bytes()
    np.save(tmp_path / "x.npy", exports["lstm_ae"].data.x_test[:2])
    with zipfile.ZipFile(io.BytesIO(content)) as archive:  # the model card, zipped after the model
        model_end = min(entry.header_offset for entry in archive.infolist())
    for cut in (model_end // 3, model_end - 16):
        (tmp_path / "model.tflite").write_bytes(content[:cut])
        result = run_edge(edge_venv, "aezoo", "predict", tmp_path / "model.tflite", tmp_path / "x.npy", check=False)
        assert_one_line_error(result, "truncated")
