"""`aezoo verify --platform aarch64`: the float32 and int8 files of every family, run in ai-edge-litert
and tflite-runtime on x86_64 and for aarch64 (qemu-user, Cortex-A72; the Transformer preset's int8 file
also on a Cortex-A76 with the reference kernels), meet their export's verify_contract: float files the
same raw outputs as on x86_64, int8 files the export's PSNR target against Keras everywhere (and, with
the reference kernels, the same outputs on every CPU); a file below its target is MISSED; and the
command's one-line errors.
Most exports are the session's (tests/export_helpers.py), shared with test_export and test_edge.
Every export runs in one emulated process per interpreter: the emulated Python starts slowly.

Needs qemu-user-static (.ci/run installs it) and, to build the cached environment the first time,
dpkg and apt-get as root (see export/builder/aarch64.py); skipped with the reason otherwise.
"""

import json
import os
import shutil

import pytest
from export_helpers import FAMILIES, session_exports, train_briefly

from export import aarch64
from recipes import cli

pytestmark = [pytest.mark.slow, pytest.mark.aarch64]

# The smallest model of every family's ops: name -> its session export (tests/export_helpers.py),
# or (FAMILIES entry, extra options) for a model trained here. The Transformer in both feed-forward activations.
VERIFIED = {
    "dense_ae": "dense_ae",  # its dynamic-range file too, which tflite_runtime refuses
    "conv_ae": "conv_ae",
    "lstm_ae": "lstm_ae",
    "vae_conv": "vae_conv",
    "transformer_gelu": "transformer_ae",
    "transformer_relu": ("transformer_ae", {"activation": "relu"}),
}
PRESET = "transformer_ae_fashion_mnist"  # its GELU int8 file was 67 steps apart before issue 12's fix
# tflite_runtime 2.14's default kernels run the preset's int8 file up to ~50 steps apart on aarch64 and
# x86_64 (ai_edge_litert: 0 steps): its steps are recorded, its accuracy asserted. Its reference kernels
# match in steps too (asserted below).
UNMATCHED_RUNTIMES = {PRESET: {"tflite_runtime"}}


def _skip_reason():
    if shutil.which(aarch64.QEMU) is None:
        return f"{aarch64.QEMU} not installed: apt-get install qemu-user-static"
    built = (aarch64.cache_folder("aarch64") / "recipe.sha256").is_file()
    if not built and (shutil.which("apt-get") is None or os.geteuid() != 0):
        return "the aarch64 sysroot is built with apt-get as root, and this is not a root Debian/Ubuntu host"
    return None


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{name: export folder}: `VERIFIED`, copied from the session's exports or trained briefly here,
    and the preset's int8 file. Copies: verifying writes its results into metadata.json."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import zoo
    from export import export_model

    session = session_exports(tmp_path_factory)
    digits = zoo.data.load("digits")
    root = tmp_path_factory.mktemp("aarch64")
    folders = {name: root / name for name in [*VERIFIED, PRESET]}
    for name, source in VERIFIED.items():
        if isinstance(source, str):
            shutil.copytree(session[source].out_dir, folders[name])
            continue
        family, options = source
        data = digits.as_sequences() if FAMILIES[family][2] else digits
        export_model(train_briefly(family, data, **options), folders[name], quantize="float32,int8",
                     calibration_data=data, calibration_samples=100, verify_samples=8)
    # The export's default calibration (200 samples), as `aezoo export` makes it: with 50 samples
    # one int8 file still came out 36 steps apart (docs/boards.md, "Verified on aarch64").
    export_model(zoo.from_preset(PRESET), folders[PRESET], quantize="int8", calibration_data="fashion_mnist",
                 verify_samples=8)
    return folders


@pytest.fixture(scope="module")
def verified(exports):
    """{name: VerifyReport}: every export on a Cortex-A72, one emulated process per interpreter for all."""
    return dict(zip(exports, aarch64.verify(list(exports.values()), "aarch64", ("cortex-a72",))))


def _check_emulated(report, name, files, cpus, unmatched=UNMATCHED_RUNTIMES):
    emulated = [r for r in report.results if r.platform == "aarch64"]
    assert {(r.file, r.runtime, r.cpu) for r in emulated} == {
        (file, runtime, cpu) for file in files for runtime in aarch64.SITES for cpu in cpus
    }
    for result in emulated:
        assert result.emulated.startswith("qemu-aarch64") and result.compared_with == f"{result.runtime} on x86_64"
        if result.mode == "int8":  # the contract: the export's accuracy target, or the same outputs (reference kernels)
            assert result.met and result.judged_by == ("steps" if result.kernels == "reference" else "psnr"), str(report)
        if result.runtime in unmatched.get(name, ()):
            continue
        if result.mode == "dynamic" and result.runtime == "tflite_runtime":  # 2.14 has no hybrid kernels
            assert result.refused and result.met is None, str(report)
            continue
        if result.mode == "int8":
            assert result.max_int8_steps <= 2, str(report)
        else:
            assert result.max_abs_diff <= 1e-5, str(report)


@pytest.mark.parametrize("name", [*VERIFIED, PRESET])
def test_aarch64_outputs_match_x86(verified, name):
    report = verified[name]
    _check_emulated(report, name, [p.name for p in report.export_dir.glob("*.tflite")], ("cortex-a72",))
    # The x86_64 run of the export's own interpreter reproduces reference.npz exactly.
    native = [r for r in report.results if r.platform == "x86_64" and r.runtime == "ai_edge_litert"]
    assert native and all(r.max_abs_diff == 0 for r in native)
    # Every file meets its contract on every runtime and platform, whatever steps apart the interpreters are.
    assert not report.missed, str(report)
    metadata = json.loads((report.export_dir / "metadata.json").read_text())
    for result in (r for r in report.results if r.mode == "int8"):
        contract = metadata["files"][result.file]["verify_contract"]
        assert result.psnr_min == contract["psnr_db_min"] and result.psnr_db >= contract["psnr_db_min"]


def test_a_file_below_its_accuracy_target_is_missed(exports, tmp_path, capsys):
    # The contract is read from metadata.json: raised above what the int8 file reaches, both interpreters miss it.
    folder = shutil.copytree(exports["conv_ae"], tmp_path / "conv_ae")
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    contract = metadata["files"]["model_int8.tflite"]["verify_contract"]
    contract["psnr_db_min"] = contract["keras_psnr_db"] + 3
    path.write_text(json.dumps(metadata))
    assert cli.main(["verify", str(folder), "--platform", "x86_64"]) == 1
    missed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("MISSED")]
    assert {line.split(" on ")[1].split()[0] for line in missed} == set(aarch64.SITES)  # the runtimes
    assert all(line.startswith("MISSED: model_int8.tflite on ") and " x86_64 " in line
               and line.endswith(f"target PSNR >= {contract['psnr_db_min']:.2f} dB") for line in missed), missed


def test_transformer_int8_matches_on_cortex_a76_with_reference_kernels_in_both_runtimes(exports):
    [report] = aarch64.verify(exports[PRESET], "aarch64", ("cortex-a76",), kernels="reference")
    _check_emulated(report, PRESET, ["model_int8.tflite"], ("cortex-a76",), unmatched={})
    assert {r.kernels for r in report.results} == {"reference"} and "(reference kernels)" in str(report)
    metadata = json.loads((report.export_dir / "metadata.json").read_text())
    entries = metadata["files"]["model_int8.tflite"]["runtimes"]["verified_on"]
    emulated = {(e["runtime"], e["cpu"], e.get("kernels")) for e in entries if e["platform"] == "aarch64"}
    assert {(runtime, "cortex-a76", "reference") for runtime in aarch64.SITES} <= emulated


def test_results_are_recorded_in_metadata(verified):
    report = verified["transformer_gelu"]
    metadata = json.loads((report.export_dir / "metadata.json").read_text())
    entries = metadata["files"]["model_int8.tflite"]["runtimes"]["verified_on"]
    assert entries[0]["compared_with"] == "keras"  # the export's own check stays first
    emulated = {(e["runtime"], e["cpu"]): e for e in entries if e["platform"] == "aarch64"}
    assert set(emulated) == {(runtime, "cortex-a72") for runtime in aarch64.SITES}
    assert all(e["met"] and e["version"] and e["emulated"].startswith("qemu-aarch64") for e in emulated.values())
    assert not list(report.export_dir.glob(".metadata.json.*"))  # no temp file left
    assert "| model_int8.tflite | ai_edge_litert" in str(report)
    # The cell `aezoo export --aarch64` and the benchmark print: each interpreter's worst emulated result.
    summary = report.emulated_summary("model_int8.tflite")
    assert summary.startswith("ai_edge_litert match (") and "; tflite_runtime " in summary
    assert summary.endswith("; cortex-a72")  # untimed here: the benchmark adds ", N ms emulated"
    assert report.emulated_summary("onnx/reconstruct.onnx") == "-"


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
    assert "unknown kernels 'fast'; choose one of: default, reference" in _verify_error(
        capsys, tmp_path, "--kernels", "fast"
    )


def test_missing_qemu_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(aarch64.EdgeError, match=r"apt-get install qemu-user-static"):
        aarch64.environment("aarch64")
