"""`aezoo verify --platform aarch64`: the float32 and int8 files of every family, run in ai-edge-litert
and tflite-runtime for aarch64 (qemu-user, Cortex-A72 and Cortex-A76), give the same raw outputs
as on x86_64; and the command's one-line errors.

Needs qemu-user-static (.ci/run installs it) and, to build the cached environment the first time,
dpkg and apt-get as root (see export/aarch64.py); skipped with the reason otherwise.
"""

import json
import os
import shutil

import pytest
from export_helpers import FAMILIES, train_briefly

from export import aarch64
from recipes import cli

pytestmark = pytest.mark.aarch64

VERIFIED_FAMILIES = ("dense_ae", "conv_ae", "lstm_ae", "transformer_ae", "vae_conv")


def _skip_reason():
    if shutil.which(aarch64.QEMU) is None:
        return f"{aarch64.QEMU} not installed: apt-get install qemu-user-static"
    built = (aarch64.cache_folder("aarch64") / "recipe.sha256").is_file()
    if not built and (shutil.which("apt-get") is None or os.geteuid() != 0):
        return "the aarch64 sysroot is built with apt-get as root, and this is not a root Debian/Ubuntu host"
    return None


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """{family: VerifyReport} of float32 and int8 exports, verified on both CPUs in one verify call."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import zoo
    from export import export_model

    digits = zoo.data.load("digits")
    root = tmp_path_factory.mktemp("aarch64")
    for name in VERIFIED_FAMILIES:
        data = digits.as_sequences() if FAMILIES[name][2] else digits
        export_model(train_briefly(name, data), root / name, quantize="float32,int8", calibration_data=data,
                     calibration_samples=100, verify_samples=8)
    reports = aarch64.verify([root / name for name in VERIFIED_FAMILIES], "aarch64", aarch64.CPUS)
    return dict(zip(VERIFIED_FAMILIES, reports))


@pytest.mark.parametrize("name", VERIFIED_FAMILIES)
def test_aarch64_outputs_match_x86(verified, name):
    report = verified[name]
    emulated = [r for r in report.results if r.platform == "aarch64"]
    # Both files, both interpreters, both CPUs.
    assert {(r.file, r.runtime, r.cpu) for r in emulated} == {
        (file, runtime, cpu) for file in ("model_float32.tflite", "model_int8.tflite")
        for runtime in aarch64.SITES for cpu in aarch64.CPUS
    }
    for result in emulated:
        assert result.emulated.startswith("qemu-aarch64") and result.compared_with == f"{result.runtime} on x86_64"
        if result.mode == "int8":
            assert result.max_int8_steps <= 2, str(report)
        else:
            assert result.max_abs_diff <= 1e-5, str(report)
    # The x86_64 run of the export's own interpreter reproduces reference.npz exactly.
    native = [r for r in report.results if r.platform == "x86_64" and r.runtime == "ai_edge_litert"]
    assert native and all(r.max_abs_diff == 0 for r in native)


def test_results_are_recorded_in_metadata(verified):
    report = verified["transformer_ae"]
    metadata = json.loads((report.export_dir / "metadata.json").read_text())
    entries = metadata["files"]["model_int8.tflite"]["runtimes"]["verified_on"]
    assert entries[0]["compared_with"] == "keras"  # the export's own check stays first
    emulated = {(e["runtime"], e["cpu"]): e for e in entries if e["platform"] == "aarch64"}
    assert set(emulated) == {(runtime, cpu) for runtime in aarch64.SITES for cpu in aarch64.CPUS}
    assert all(e["met"] and e["version"] and e["emulated"].startswith("qemu-aarch64") for e in emulated.values())
    assert not list(report.export_dir.glob(".metadata.json.*"))  # no temp file left
    assert "| model_int8.tflite | ai_edge_litert" in str(report)


def _verify_error(capsys, *args):
    assert cli.main(["verify", *map(str, args)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("aezoo: error: ")
    return error


def test_one_line_errors(capsys, tmp_path):
    assert "no such export folder" in _verify_error(capsys, tmp_path / "missing")
    assert "written by 'aezoo export'" in _verify_error(capsys, tmp_path)
    (tmp_path / "metadata.json").write_text("{}")
    (tmp_path / "reference.npz").write_bytes(b"")
    assert "holds no .tflite files" in _verify_error(capsys, tmp_path)
    assert "invalid choice: 'riscv64'" in _verify_error(capsys, tmp_path, "--platform", "riscv64")
    assert "unknown --cpu cortex-a53; choose from: cortex-a72, cortex-a76" in _verify_error(
        capsys, tmp_path, "--cpu", "cortex-a72,cortex-a53"
    )


def test_missing_qemu_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(aarch64.EdgeError, match=r"apt-get install qemu-user-static"):
        aarch64.environment("aarch64")
