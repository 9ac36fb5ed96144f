"""`export_model`: a zoo model as a SavedModel and TFLite files, each verified against Keras.

Layout of an export folder:
    saved_model/              serving_default (reconstruct), encode, decode (+ encode_distribution, sample)
    model_<mode>.tflite       one file per mode, all signatures in it, fixed batch
    onnx/<signature>.onnx     with onnx=True: one ONNX file per signature, any batch (export.builder.onnx_target)
    reference.npz             the held-out inputs with the Keras and per-file outputs (what `aezoo verify` runs)
    metadata.json             model, shapes, dtypes, ranges, quantization, runtimes, checks, GPU delegate verdicts, sha256s
    micro/                    with micro=True: TFLite Micro files and C arrays (see export.builder.micro)

Everything is written to a temp folder beside the target and moved into place when complete,
so a failed export leaves the target as it was.
"""

import dataclasses
import hashlib
import json
import os
import platform
import secrets
import shutil
from pathlib import Path

import keras
import numpy as np

from zoo.backend import import_tensorflow

tf = import_tensorflow("export (SavedModel, TFLite, ONNX, TFLite Micro)")

import zoo  # noqa: E402
from export.builder import convert, gpu_delegate, micro, tflite_metadata  # noqa: E402
from export.builder.aarch64 import CROSS_RUNTIME_FLOAT_TARGET, FLOAT_TARGET, INT8_STEPS_TARGET, host_cpu  # noqa: E402
from export.builder.convert import MODES  # noqa: E402
from export.builder.quality import psnr  # noqa: E402
from export.edge import runtime  # noqa: E402
from export.edge.tflite_file import parse_version, read_model_info  # noqa: E402
from zoo.errors import ZooError, unknown_name  # noqa: E402

FORMAT = "aezoo-export/1"
SAVED_MODEL_DIR = "saved_model"
REFERENCE_FILE = "reference.npz"
# The last tflite_runtime release; files needing a newer TFLite runtime run on ai_edge_litert only.
LAST_TFLITE_RUNTIME = "2.14.0"
# Float files' max abs diff against Keras (times the output's peak |value| beyond 1: runtime.float_limit).
MAX_ABS_TARGETS = {"saved_model": 1e-4, "float32": 1e-4, "float16": 1e-2, "onnx": 1e-5}
ALL_SIGNATURES_JUDGED = ("onnx",)  # one file per signature: each must meet the target, not reconstruct alone
PSNR_DROP_TARGET_DB = 1.0  # dynamic and int8: PSNR within this of the Keras model's
# Integer outputs (a vq_vae's codebook indices): the share of positions where a file's index is the Keras model's.
INDEX_AGREEMENT_TARGET = 0.99
PHONE_DIR = "phone"
PHONE_MODES = ("float16", "int8")  # float16: the GPU delegate's file (it computes in float16); int8: CPUs


def tflite_name(mode):
    """File name of a mode's TFLite model in an export folder."""
    return f"model_{mode}.tflite"


@dataclasses.dataclass
class ArtifactCheck:
    """How one artifact compared with the Keras model on the held-out samples.

    `max_abs_diff` is per signature with float outputs; targets are judged on the reconstruction
    (ONNX: on every signature): max |diff| for float artifacts (scaled by `output_peak` where it
    exceeds 1), the PSNR drop against the Keras model for dynamic and int8. Signatures with
    integer outputs (a vq_vae's encode) are judged in every mode by `index_agreement`: the share
    of indices equal to the Keras model's, at least `INDEX_AGREEMENT_TARGET`.
    """

    file: str
    mode: str
    size_bytes: int
    verified_on: str
    max_abs_diff: dict
    psnr_db: float
    keras_psnr_db: float
    tflite_runtime_2_14: bool | None  # None: not a TFLite file
    output_peak: dict  # per signature, the largest |value| of the Keras outputs compared
    index_agreement: dict = dataclasses.field(default_factory=dict)  # per signature with integer outputs

    @property
    def judged_signatures(self):
        return tuple(self.max_abs_diff) if self.mode in ALL_SIGNATURES_JUDGED else ("reconstruct",)

    def limit(self, signature):
        """A float artifact's max abs diff target for one signature's outputs."""
        return runtime.float_limit(MAX_ABS_TARGETS[self.mode], self.output_peak[signature])

    def signature_met(self, signature):
        return self.max_abs_diff[signature] <= self.limit(signature)

    @property
    def target(self):
        indices = f"; index agreement >= {INDEX_AGREEMENT_TARGET:.0%}" if self.index_agreement else ""
        if self.mode in MAX_ABS_TARGETS:
            scaled = any(self.output_peak[s] > 1 for s in self.judged_signatures)
            return f"max abs diff <= {MAX_ABS_TARGETS[self.mode]:g}" + (" x output peak" if scaled else "") + indices
        return f"PSNR >= Keras - {PSNR_DROP_TARGET_DB:g} dB" + indices

    @property
    def indices_met(self):
        return all(share >= INDEX_AGREEMENT_TARGET for share in self.index_agreement.values())

    def signature_json(self, signature):
        """One signature's verification (ONNX files hold one signature each)."""
        if signature in self.index_agreement:
            share = self.index_agreement[signature]
            return {"index_agreement": share, "target": f"index agreement >= {INDEX_AGREEMENT_TARGET:.0%}",
                    "met": share >= INDEX_AGREEMENT_TARGET}
        return {"max_abs_diff": self.max_abs_diff[signature], "target": f"max abs diff <= {self.limit(signature):.2g}",
                "met": self.signature_met(signature)}

    @property
    def judged_diff(self):
        """The largest max abs diff of the judged signatures."""
        return max(self.max_abs_diff[s] for s in self.judged_signatures)

    @property
    def met(self):
        if self.mode in MAX_ABS_TARGETS:
            return self.indices_met and all(self.signature_met(s) for s in self.judged_signatures)
        return self.indices_met and self.psnr_db >= self.keras_psnr_db - PSNR_DROP_TARGET_DB

    def verified_on_entry(self):
        """Its metadata.json `runtimes.verified_on` entry: the runtime on this machine, against Keras."""
        name, _, version = self.verified_on.partition(" ")
        return {"runtime": name, "version": version, "platform": platform.machine(), "cpu": host_cpu(),
                "compared_with": "keras"}

    def to_json(self):
        return {
            "max_abs_diff": self.max_abs_diff,
            **({"index_agreement": self.index_agreement} if self.index_agreement else {}),
            "psnr_db": self.psnr_db,
            "keras_psnr_db": self.keras_psnr_db,
            "target": self.target,
            "met": self.met,
        }


@dataclasses.dataclass
class ExportReport:
    """What `export_model` wrote and how each artifact verified; `str()` gives the printed table."""

    out_dir: Path
    model_name: str
    checks: list
    verification_note: str
    notes: list
    micro_checks: list = dataclasses.field(default_factory=list)
    aarch64: object = None  # the aarch64.VerifyReport of `aezoo export --aarch64`, else None

    @property
    def missed(self):
        """The checks whose target was not met."""
        return [check for check in self.checks if not check.met]

    def __str__(self):
        rows = [
            f"exported {self.model_name} to {self.out_dir} ({self.verification_note})",
            "| file | size | verified on | max abs diff (reconstruct) | PSNR dB (Keras) | target | tflite_runtime 2.14 | "
            "aarch64 vs x86_64 (--aarch64) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for check in self.checks:
            runs_there = {None: "-", True: "yes", False: "no (ai_edge_litert)"}[check.tflite_runtime_2_14]
            emulated = self.aarch64.emulated_summary(check.file) if self.aarch64 else "-"
            rows.append(
                f"| {check.file} | {format_size(check.size_bytes)} | {check.verified_on} | "
                f"{check.max_abs_diff['reconstruct']:.2e} | {check.psnr_db:.2f} ({check.keras_psnr_db:.2f}) | "
                f"{check.target}: {'met' if check.met else 'MISSED'} | {runs_there} | {emulated} |"
            )
        if self.micro_checks:
            rows += micro.report_lines(self.micro_checks)
        rows += self.notes
        rows += [
            f"MISSED: {check.file}: {_miss_description(check)}; the file was kept, check the quality before use"
            for check in self.missed
        ]
        if self.aarch64:
            rows += [line for line in str(self.aarch64).splitlines() if line.startswith(("MISSED", "refused"))]
        return "\n".join(rows)


def _miss_description(check):
    misses = [f"index agreement {share:.2%} < {INDEX_AGREEMENT_TARGET:.0%} ({s})"
              for s, share in check.index_agreement.items() if share < INDEX_AGREEMENT_TARGET]
    if check.mode in MAX_ABS_TARGETS:
        misses += [f"max abs diff {check.max_abs_diff[s]:.2e} > {check.limit(s):.2g} ({s})"
                   for s in check.judged_signatures if not check.signature_met(s)]
        return "; ".join(misses)
    if check.indices_met:
        return _psnr_miss(check)
    return "; ".join(misses + ([_psnr_miss(check)] if check.psnr_db < check.keras_psnr_db - PSNR_DROP_TARGET_DB else []))


def _psnr_miss(check):
    return f"PSNR {check.psnr_db:.2f} dB is {check.keras_psnr_db - check.psnr_db:.2f} dB below Keras (target {PSNR_DROP_TARGET_DB:g} dB)"


def format_size(size_bytes):
    """1536 -> '1.5 KB'."""
    return f"{size_bytes / 1024:.1f} KB" if size_bytes < 1 << 20 else f"{size_bytes / (1 << 20):.2f} MB"


def parse_modes(quantize):
    """["float32", "int8"] from a comma string or a list; a ZooError naming the valid modes otherwise.

    Example:
        >>> parse_modes("int8,float32")  # ('float32', 'int8'): canonical order, no duplicates
    """
    requested = quantize.split(",") if isinstance(quantize, str) else list(quantize)
    requested = [str(mode).strip() for mode in requested if str(mode).strip()]
    if not requested:
        raise ZooError(f"no quantize mode given; choose from: {', '.join(MODES)}")
    for mode in requested:
        if mode not in MODES:
            raise unknown_name("quantize mode", mode, MODES)
    return tuple(mode for mode in MODES if mode in requested)


def export_model(model, out_dir, quantize=("float32", "int8"), batch_size=1, calibration_data=None,
                 calibration_samples=200, verify_samples=64, micro_target=False, onnx=False, phone=False, card=None):
    """Writes a SavedModel and one TFLite file per mode for a zoo model, each verified against Keras.

    Args:
        model: a zoo model, or the path of a .keras file saved from one.
        out_dir: the export folder; created, or replaced if it holds an earlier export.
        quantize: modes, a list or comma string of float32, float16, dynamic, int8.
        batch_size: the fixed batch of the TFLite files (the edge runtime splits larger inputs).
        calibration_data: a data set name for `zoo.data.load` (e.g. "mnist5k"; image files are
            read at the model's input size and colour mode) or `DataSplits`:
            training examples calibrate int8, held-out test examples verify every artifact.
            Required for int8; without it float artifacts are verified on random inputs.
        calibration_samples: training examples used for int8 calibration.
        verify_samples: held-out examples every artifact is checked on.
        micro_target: also write micro/: single-signature int8 files for TensorFlow Lite Micro,
            as C arrays, with arenas measured and outputs verified in its interpreter
            (needs calibration data and `pip install tflite-micro`).
        onnx: also write onnx/<signature>.onnx per signature, verified in ONNX Runtime (needs
            tf2onnx, onnx and onnxruntime: the `onnx` extra).
        phone: also write phone/: what an app needs in one folder (`PHONE_MODES` files, the
            model card, a README with the input and output contract); adds those modes.
        card: a model card (.md) copied into phone/ (a preset folder's README.md).

    Returns:
        ExportReport; `str(report)` is the table `aezoo export` prints. Targets that are
        missed are reported there (and in metadata.json), not raised.

    Raises:
        ZooError: unknown mode, bad batch size, no calibration data for int8, data that does
            not fit the model, an out_dir that is not an export folder, a graph that needs
            non-builtin ops, (micro_target) an op TFLite Micro lacks, or (onnx) ops ONNX
            Runtime cannot run. Nothing is left behind in out_dir.
        EdgeError: micro_target without tflite-micro installed.

    Example:
        >>> report = export_model(model, "out", quantize="float32,int8", calibration_data="mnist5k")
        >>> print(report)
    """
    modes = _check_arguments(model, quantize, batch_size, calibration_data, micro_target, phone, card)
    _require_packages(micro_target, onnx)
    target = Path(out_dir).resolve()
    _check_target(target)
    model = _as_zoo_model(model)
    samples = _Samples.prepare(model, calibration_data, calibration_samples, verify_samples, batch_size)
    staging = _make_staging(target)
    try:
        report = _write_export(model, staging, modes, int(batch_size), samples, micro_target, onnx, card)
        if phone:
            write_phone_folder(staging, card)
        _move_into_place(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise _write_error(target, error) from None
        raise
    report.out_dir = Path(out_dir)
    return report


def _check_arguments(model, quantize, batch_size, calibration_data, micro_target, phone, card):
    """The export's modes, after checking `export_model`'s arguments; a one-line ZooError otherwise."""
    modes = parse_modes(quantize)
    if phone:
        modes = parse_modes([*modes, *PHONE_MODES])
    if card is not None and not Path(card).is_file():
        raise ZooError(f"model card {card}: no such file")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ZooError(f"batch_size must be a positive int, got {batch_size!r}")
    if phone and calibration_data is None:
        raise ZooError("--phone writes an int8 file, which needs calibration data: pass --calibration-data NAME")
    if "int8" in modes and calibration_data is None:
        raise ZooError("int8 needs calibration data: pass --calibration-data NAME (e.g. mnist5k) or drop int8")
    if micro_target and calibration_data is None:
        raise ZooError("--micro writes int8 files, which need calibration data: pass --calibration-data NAME")
    if micro_target and convert.is_conditional(_as_zoo_model(model)):
        raise ZooError("--micro writes one-input files and the cvae's signatures take two (x and labels); "
                       "export the cvae without --micro")
    return modes


def _require_packages(micro_target, onnx):
    """Fails, naming what to install, when a package the requested targets need is missing."""
    if micro_target:
        micro.find_tflm()  # before any work: say what to install
    if onnx:
        from export import onnx_target  # optional dependencies: fail before any work

        onnx_target.require()
    tflite_metadata.require()


def _make_staging(target):
    """A new, empty staging folder for the export to `target`; a one-line ZooError if it cannot be made."""
    # Beside the target (same file system, so the final move is a rename); mkdir keeps the umask.
    staging = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as error:
        raise _write_error(target, error) from None
    return staging


def _write_error(target, error):
    """A one-line ZooError for a failed write (disk full, read-only, missing folder), saying what is kept."""
    kept = "the earlier export there is unchanged" if (target / runtime.METADATA_FILE).is_file() else "nothing was written"
    return ZooError(f"could not write the export to {target} ({error.strerror or error}); {kept}; "
                    "free disk space or choose another --out")


def _check_target(out_dir):
    if out_dir.exists() and not out_dir.is_dir():
        raise ZooError(f"{out_dir} is a file; give a folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / runtime.METADATA_FILE).is_file():
        raise ZooError(f"{out_dir} is not empty and holds no earlier export; choose a new or empty folder")


def _as_zoo_model(model):
    if isinstance(model, (str, os.PathLike)):
        if not Path(model).is_file():
            raise ZooError(f"{model}: no such model file")
        model = keras.models.load_model(model)
    if not all(hasattr(model, name) for name in ("registry_name", "data_shape", "encode", "decode")):
        raise ZooError(f"export_model needs a zoo model (zoo.create or a .keras file of one), got {type(model).__name__}")
    return model


def _move_into_place(staging, out_dir):
    """Swaps the finished staging folder in; an earlier export there is removed only afterwards."""
    previous = None
    if out_dir.exists():
        previous = out_dir.with_name(f"{staging.name}.previous")
        os.rename(out_dir, previous)
    try:
        os.rename(staging, out_dir)
    except OSError:
        if previous is not None:
            os.rename(previous, out_dir)
        raise
    if previous is not None:
        shutil.rmtree(previous)


@dataclasses.dataclass
class _Samples:
    """Calibration and verification inputs for one export, with the value range they imply."""

    calibration: np.ndarray | None
    verification: np.ndarray
    input_range: list | None  # hard bounds the edge runtime enforces
    peak: float  # PSNR peak value
    note: str
    source: str | None
    calibration_labels: np.ndarray | None = None  # a cvae's int32 class ids of the calibration examples
    verification_labels: np.ndarray | None = None

    @classmethod
    def prepare(cls, model, data, calibration_samples, verify_samples, batch_size):
        backbone = getattr(model, "backbone", model)
        sigmoid = backbone.output_activation == "sigmoid"
        if data is None:
            # Only float modes get here: their max abs diff is meaningful on any input.
            rng = np.random.default_rng(0)
            shape = (verify_samples, *model.data_shape)
            verification = rng.random(shape, dtype=np.float32) if sigmoid else rng.standard_normal(shape).astype("float32")
            return cls(
                None, verification, [0.0, 1.0] if sigmoid else None, 1.0,
                f"no calibration data: verified on {verify_samples} random inputs, PSNR not meaningful", None,
                None, _class_ids(model, None, verify_samples),
            )
        if isinstance(data, (str, os.PathLike)):  # image files: read at the model's input size and colour mode
            splits = zoo.data.load(data, **zoo.data.image_options_for(tuple(model.data_shape), data))
        else:
            splits = data
        if splits.input_shape != tuple(model.data_shape) and splits.input_shape == (*model.data_shape, 1):
            splits = splits.as_sequences()
        if splits.input_shape != tuple(model.data_shape):
            raise ZooError(
                f"calibration data {splits.name} has examples of shape {splits.input_shape}; "
                f"the model takes {tuple(model.data_shape)}"
            )
        calibration = splits.x_train[:calibration_samples].astype("float32")
        verification = splits.x_test[:verify_samples].astype("float32")
        if len(calibration) < batch_size or len(verification) < 1:
            raise ZooError(
                f"calibration data {splits.name} has {len(calibration)} training and {len(verification)} test "
                f"examples; need at least batch_size={batch_size} and 1"
            )
        low, high = float(splits.x_train.min()), float(splits.x_train.max())
        input_range = [min(0.0, low), max(1.0, high)] if sigmoid else None
        return cls(
            calibration, verification, input_range,
            (input_range[1] - input_range[0]) if input_range else (high - low) or 1.0,
            f"verified on {len(verification)} held-out test examples of {splits.name}; "
            f"calibration set: {len(calibration)} training examples",
            splits.name,
            _class_ids(model, splits.y_train, len(calibration)), _class_ids(model, splits.y_test, len(verification)),
        )

    def signature_inputs(self, latent_dim, codes, count=None):
        """{input name: array} for verification: x, z (the Keras codes of x), eps ~ N(0, I) and a cvae's labels."""
        x = self.verification[:count]
        eps = np.random.default_rng(1).standard_normal((len(x), latent_dim)).astype("float32")
        labels = {} if self.verification_labels is None else {runtime.LABELS: self.verification_labels[: len(x)]}
        return {"x": x, "z": codes[: len(x)], "eps": eps, **labels}


def _class_ids(model, labels, count):
    """A cvae's int32 class ids for `count` examples: the data's labels (ids or one-hot rows), or
    seeded random ids for data without labels; None for other models."""
    if not convert.is_conditional(model):
        return None
    if labels is None:
        return np.random.default_rng(3).integers(0, model.num_classes, count).astype("int32")
    labels = np.asarray(labels)[:count]
    labels = labels.argmax(axis=-1) if labels.ndim == 2 else labels.reshape(len(labels))
    if labels.min() < 0 or labels.max() >= model.num_classes:
        raise ZooError(f"the calibration data's labels run from {labels.min()} to {labels.max()}; the cvae has "
                       f"num_classes={model.num_classes}: calibrate on the data it was trained on")
    return labels.astype("int32")


@dataclasses.dataclass
class ExportContext:
    """What a further target (micro/, onnx/) gets to write and verify its files in an export.

    `compare` checks a target's outputs against the Keras ones the same way every artifact is.
    """

    folder: Path  # the staging folder
    copy: object  # the float32 export copy the signatures are traced from
    functions: dict  # its signature functions, by name
    signatures: tuple
    inputs: dict  # verification inputs by name (x, z, eps)
    keras_outputs: dict
    samples: _Samples
    keras_psnr: float

    def compare(self, file, mode, size, verified_on, outputs, runs_on_2_14=None):
        return _compare(file, mode, size, verified_on, outputs, self.keras_outputs, self.samples, self.keras_psnr,
                        runs_on_2_14)


def _write_export(model, folder, modes, batch_size, samples, micro_target=False, onnx=False, card=None):
    """Writes every artifact of an export into `folder` (the staging folder), each verified, and its metadata.json."""
    context, notes = _keras_reference(model, folder, samples)
    check, saved_model_entry = _write_saved_model(context)
    checks, files = [check], {SAVED_MODEL_DIR: saved_model_entry}
    reference = {f"inputs/{name}": value for name, value in context.inputs.items()}
    reference.update(_flatten_outputs("keras", context.keras_outputs))
    source = folder / ".tflite_source"
    convert.write_saved_model(context.copy, source, batch_size=batch_size, reconstruct_key="reconstruct")
    # Micro first: a graph TFLite Micro cannot run fails the export before the longer conversions.
    micro_checks = _write_micro(context, source, batch_size) if micro_target else []
    representative = _representative_dataset(context.copy, context.functions, context.signatures, samples, batch_size)
    float_source = gpu_delegate.write_source(model, folder, batch_size, modes) or source
    for mode in modes:
        mode_source = float_source if mode in gpu_delegate.MODES else source
        check, files[tflite_name(mode)], outputs = _write_tflite(
            context, model, mode, mode_source, representative, batch_size, card, notes)
        checks.append(check)
        reference.update(_flatten_outputs(tflite_name(mode), outputs))
    shutil.rmtree(source)
    shutil.rmtree(float_source, ignore_errors=True)
    if micro_checks:
        files[micro.MICRO_DIR] = {"kind": "micro", "content": f"{micro.MICRO_DIR}/{micro.MICRO_FILE} lists the files"}
    if onnx:
        from export.builder import onnx_target

        written = onnx_target.export(context)
        checks.append(written.check)
        files.update(written.files)
        reference.update(_flatten_outputs(onnx_target.FOLDER, written.outputs))

    files[REFERENCE_FILE] = _write_reference(folder, reference, len(samples.verification))
    metadata = _metadata(model, context.copy, context.signatures, batch_size, samples, files, notes)
    (folder / runtime.METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return ExportReport(folder, model.registry_name, checks, samples.note, notes, micro_checks)


def _keras_reference(model, folder, samples):
    """The export's context (float32 copy, signatures, verification inputs, Keras outputs) and first notes."""
    copy = convert.export_copy(model)
    signatures = convert.signature_names(copy)
    functions = convert.signature_functions(copy)
    inputs = samples.signature_inputs(copy.latent_dim, _codes(copy, functions, samples.verification, samples.verification_labels))
    keras_outputs = _run_functions(copy, functions, signatures, inputs)
    keras_psnr = psnr(samples.verification, keras_outputs["reconstruct"]["reconstruction"], samples.peak)
    notes = []
    if model.dtype_policy.name != "float32":
        drift = float(np.abs(np.asarray(model(samples.verification)) - keras_outputs["reconstruct"]["reconstruction"]).max())
        notes.append(
            f"note: {model.dtype_policy.name} model exported from its float32 copy (the reference above); "
            f"copy vs original max abs diff {drift:.2e}"
        )
    return ExportContext(folder, copy, functions, signatures, inputs, keras_outputs, samples, keras_psnr), notes


def _write_saved_model(context):
    """Writes saved_model/ and runs it against Keras: (its check, its metadata.json entry)."""
    folder, signatures = context.folder, context.signatures
    convert.write_saved_model(context.copy, folder / SAVED_MODEL_DIR)
    loaded = tf.saved_model.load(str(folder / SAVED_MODEL_DIR))
    saved_outputs = _run_functions(
        context.copy, {s: loaded.signatures["serving_default" if s == "reconstruct" else s] for s in signatures},
        signatures, context.inputs, by_keyword=True,
    )
    check = context.compare("saved_model", "saved_model", tree_size(folder / SAVED_MODEL_DIR),
                            f"tensorflow {tf.__version__}", saved_outputs)
    return check, {
        "kind": "saved_model",
        "sha256": tree_sha256(folder / SAVED_MODEL_DIR),
        "sha256_of": "the lines '<sha256>  <relative path>' of every file, sorted by path",
        "signatures": ["serving_default" if s == "reconstruct" else s for s in signatures],
        "batch_size": None,
        "runtimes": {"verified_on": [check.verified_on_entry()]},
        "verification": check.to_json(),
    }


def _write_tflite(context, model, mode, source, representative, batch_size, card, notes):
    """Converts, writes and runs one mode's TFLite file: (its check, metadata.json entry, outputs); adds its notes."""
    copy, samples, signatures = context.copy, context.samples, context.signatures
    path = context.folder / tflite_name(mode)
    content = convert.convert(source, signatures, mode, representative if mode == "int8" else None,
                              recurrent=convert.is_recurrent(copy), codebook=convert.codebook_in_float(copy))
    embedded = tflite_metadata.describe(model, copy, signatures, samples.input_range, mode, batch_size, card)
    content = tflite_metadata.embed(content, embedded, Path(card).read_text() if card else
                                    tflite_metadata.generated_card(model, embedded))
    path.write_bytes(content)
    edge = runtime.load(path)
    edge.input_range = samples.input_range  # what metadata.json will declare; not written yet
    inputs = context.inputs
    outputs = {s: edge.run(s, inputs[runtime.SIGNATURES[s].input], inputs.get(runtime.LABELS)) for s in signatures}
    min_version = read_model_info(content).min_runtime_version
    runs_on_2_14 = parse_version(min_version or "0") <= parse_version(LAST_TFLITE_RUNTIME)
    check = context.compare(path.name, mode, len(content), str(edge.runtime), outputs, runs_on_2_14)
    entry = _tflite_entry(check, content, edge, embedded, min_version, batch_size, samples.peak)
    if mode in gpu_delegate.MODES:
        verdict = gpu_delegate.check(content)
        entry["gpu_delegate"] = verdict.to_json()
        notes.append(verdict.note(path.name))
    if mode == "int8":
        notes.append(_contract_note(check, entry["verify_contract"]))
    return check, entry, outputs


def _tflite_entry(check, content, edge, embedded, min_version, batch_size, peak):
    """A TFLite file's metadata.json entry (without its GPU delegate verdict)."""
    return {
        "kind": "tflite",
        "mode": check.mode,
        "size_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "batch_size": batch_size,
        "signatures": edge.describe_signatures(),
        "ops": convert.op_names(content),
        "embedded_metadata": embedded,
        "min_runtime_version": min_version,
        "runtimes": {
            "verified_on": [check.verified_on_entry()],
            "runs_on": {"ai_edge_litert": True, "tflite_runtime": check.tflite_runtime_2_14},
        },
        "verification": check.to_json(),
        "verify_contract": verify_contract(check, peak),
    }


def _write_reference(folder, reference, count):
    """Writes reference.npz (what `aezoo verify` runs): its metadata.json entry."""
    np.savez_compressed(folder / REFERENCE_FILE, **reference)
    return {
        "kind": "reference",
        "sha256": runtime.sha256_file(folder / REFERENCE_FILE),
        "content": "inputs/<x|z|eps|labels>, keras/<signature>/<output> and <file>/<signature>/<output> "
        f"for the {count} verification examples",
    }


def write_phone_folder(export_dir, card=None):
    """phone/ in an export folder: its float16 and int8 files, the model card (when given) and a
    README.md with each file's signatures, input and output names, shapes, ranges and quantization."""
    export_dir = Path(export_dir)
    metadata = json.loads((export_dir / runtime.METADATA_FILE).read_text())
    folder = export_dir / PHONE_DIR
    folder.mkdir()
    for mode in PHONE_MODES:
        shutil.copyfile(export_dir / tflite_name(mode), folder / tflite_name(mode))
    if card is not None:
        shutil.copyfile(card, folder / "MODEL_CARD.md")
    (folder / "README.md").write_text(_phone_readme(metadata, card is not None))


def _phone_readme(metadata, has_card):
    model, value_range = metadata["model"], metadata["input"]["range"]
    lines = [
        f"# {model['name']} for apps",
        "",
        f"Batch {metadata['batch_size']}; inputs in [{value_range[0]:g}, {value_range[1]:g}]." if value_range else
        f"Batch {metadata['batch_size']}; inputs unbounded (standardised data).",
        "Run a signature by name (LiteRT `Interpreter.runSignature`, TensorFlowLiteSwift `signatureRunner(with:)`).",
        "int8 files take and give int8: quantize as q = round(x / scale) + zero_point, dequantize as "
        "x = (q - zero_point) * scale.",
        *(["The model card: MODEL_CARD.md."] if has_card else []),
    ]
    for mode in PHONE_MODES:
        entry = metadata["files"][tflite_name(mode)]
        lines += ["", f"## {tflite_name(mode)} ({format_size(entry['size_bytes'])})", "",
                  "| signature | tensor | name | shape | dtype | scale | zero point |", "|---|---|---|---|---|---|---|"]
        for signature, tensors in entry["signatures"].items():
            for kind in ("inputs", "outputs"):
                for name, tensor in tensors[kind].items():
                    lines.append(f"| {signature} | {kind[:-1]} | {name} | {tensor['shape']} | {tensor['dtype']} | "
                                 f"{tensor.get('scale') or '-'} | {tensor.get('zero_point', '-')} |")
    return "\n".join(lines) + "\n"


def _xnnpack_steps(path, input_range, inputs, outputs):
    """How far an int8 file's outputs through XNNPACK are from `outputs` (the default kernels'), in
    output quantization steps: the two requantize differently, so an app's outputs may differ by this."""
    fast = runtime.load(path, kernels="xnnpack")
    fast.input_range = input_range
    described = fast.describe_signatures()
    steps = 0.0
    for signature, expected in outputs.items():
        for name, value in fast.run(signature, inputs[runtime.SIGNATURES[signature].input], inputs.get(runtime.LABELS)).items():
            scale = described[signature]["outputs"][name]["scale"]
            steps = max(steps, float(np.abs(value - expected[name]).max()) / scale)
    return round(steps, 2)


def verify_contract(check, peak):
    """What `aezoo verify` holds a TFLite file to on every runtime, platform and CPU it runs it on
    (metadata.json `files.<name>.verify_contract`).

    int8 files: the export's own accuracy target, the PSNR of the reconstruction of reference.npz's
    inputs at most `PSNR_DROP_TARGET_DB` below the Keras model's. Interpreters and CPUs round int8
    arithmetic differently (a final sigmoid multiplies a step), so output steps between them are
    reported, not judged; only the reference kernels promise the same outputs on every CPU, within one
    interpreter. Float files: max abs diff from the outputs in reference.npz (`aarch64` targets).
    """
    if check.mode != "int8":
        return {"judged_by": "max_abs_diff", "target": f"max abs diff from the same interpreter's x86_64 outputs "
                f"<= {FLOAT_TARGET:g}, from another interpreter's <= {CROSS_RUNTIME_FLOAT_TARGET:g} (times the output's "
                "peak |value| beyond 1)"}
    minimum = check.keras_psnr_db - PSNR_DROP_TARGET_DB
    return {
        "judged_by": "psnr",
        "psnr_db_min": minimum,
        "keras_psnr_db": check.keras_psnr_db,
        "psnr_peak": peak,
        "target": f"PSNR >= {minimum:.2f} dB (Keras {check.keras_psnr_db:.2f} dB - {PSNR_DROP_TARGET_DB:g} dB) "
                  "on reference.npz's inputs/x, on every runtime, platform and CPU",
        "output_steps": "reported, not judged: interpreters and CPUs round int8 arithmetic differently",
        "reference_kernels": f"--kernels reference: within {INT8_STEPS_TARGET} output steps of the same "
                             "interpreter's x86_64 outputs on every CPU",
    }


def _contract_note(check, contract):
    return (f"verify contract: {check.file} keeps PSNR >= {contract['psnr_db_min']:.2f} dB (Keras - "
            f"{PSNR_DROP_TARGET_DB:g} dB) on every runtime and CPU 'aezoo verify' checks; its outputs there may differ "
            f"by a few steps (reported, not judged); the same outputs on every CPU only with --kernels reference")


def _write_micro(context, source, batch_size):
    """The micro/ folder: each board signature converted alone, at batch 1 (a board runs one example).

    `source` is the TFLite files' SavedModel, traced at `batch_size`.
    """
    folder, copy, signatures, samples = context.folder, context.copy, context.signatures, context.samples
    attention = convert.has_attention(copy)
    own_source = batch_size != 1 or attention
    if own_source:
        source = folder / ".micro_source"
        # An attention graph's int16x8 files need layer norms in the form that quantizer handles.
        traced = convert.export_copy(copy, explicit_norms=True) if attention else copy
        convert.write_saved_model(traced, source, batch_size=1, reconstruct_key="reconstruct")
    representative = _representative_dataset(copy, context.functions, signatures, samples, 1)
    preferred = micro.preferred_precision(convert.is_recurrent(copy) or attention)

    def convert_one(signature):
        def batches():
            return (item for item in representative() if item[0] == signature)

        note = None
        if preferred == "int16x8":
            content = convert.convert(source, [signature], "int16x8", batches)
            degenerate = micro.degenerate_tensors(content)
            if not degenerate:
                return content, "int16x8", None
            note = (f"int8, not int16x8: the int16x8 quantizer gave {len(degenerate)} tensors a non-finite scale "
                    "(an input that is zero in every calibration example), which the kernels run differently")
        return convert.convert(source, [signature], "int8", batches, all_int8=True), "int8", note

    try:
        return micro.write_micro(
            folder / micro.MICRO_DIR, signatures, convert_one, context.inputs, samples.verification, samples.peak,
            copy.latent_dim, samples.input_range,
        )
    except runtime.EdgeError as error:
        raise ZooError(str(error)) from None
    finally:
        if own_source:
            shutil.rmtree(source)


def _run_functions(copy, functions, signatures, inputs, by_keyword=False):
    """{signature: {output: numpy}} of signature functions (SavedModel ones: by_keyword) on the inputs."""
    results = {}
    for signature in signatures:
        values = {name: tf.constant(inputs[name]) for name in convert.input_names(copy, signature)}
        outputs = functions[signature](**values) if by_keyword else functions[signature](*values.values())
        results[signature] = {key: np.asarray(tensor) for key, tensor in outputs.items()}
    return results


def _codes(copy, functions, x, labels):
    """The Keras codes of `x` (a cvae's of class `labels`): what decode is verified and calibrated on."""
    extra = () if labels is None else (tf.constant(labels),)
    return functions["encode"](tf.constant(x), *extra)["code"].numpy()


def _representative_dataset(copy, functions, signatures, samples, batch_size):
    """int8 calibration: real training examples (and their codes, a cvae's labels) per signature, in full batches."""
    if samples.calibration is None:
        return None
    x = samples.calibration[: len(samples.calibration) // batch_size * batch_size]
    labels = None if samples.calibration_labels is None else samples.calibration_labels[: len(x)]
    z = _codes(copy, functions, x, labels)
    eps = np.random.default_rng(2).standard_normal((len(x), copy.latent_dim)).astype("float32")
    values = {"x": x, "z": z, "eps": eps, runtime.LABELS: labels}

    def batches():
        for start in range(0, len(x), batch_size):
            for signature in signatures:
                yield signature, {name: values[name][start : start + batch_size] for name in convert.input_names(copy, signature)}

    return batches


def _compare(file, mode, size, verified_on, outputs, keras_outputs, samples, keras_psnr, runs_on_2_14):
    max_abs, peak, agreement = {}, {}, {}
    for signature, named in keras_outputs.items():
        floats = [k for k, value in named.items() if np.issubdtype(value.dtype, np.floating)]
        if floats:
            max_abs[signature] = max(float(np.abs(outputs[signature][k] - named[k]).max()) for k in floats)
            peak[signature] = max(float(np.abs(named[k]).max()) for k in floats)
        if len(floats) < len(named):  # integer outputs: a vq_vae's codebook indices
            agreement[signature] = min(float(np.mean(outputs[signature][k] == value))
                                       for k, value in named.items() if k not in floats)
    reconstruction = outputs["reconstruct"]["reconstruction"]
    return ArtifactCheck(file, mode, size, verified_on, max_abs, psnr(samples.verification, reconstruction, samples.peak),
                         keras_psnr, runs_on_2_14, peak, agreement)


def _flatten_outputs(prefix, outputs):
    return {f"{prefix}/{s}/{name}": value for s, named in outputs.items() for name, value in named.items()}


def tree_size(folder):
    """Total bytes of the files under `folder`."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def tree_sha256(folder):
    """sha256 of a folder: of the sorted lines '<file sha256>  <relative path>'."""
    folder = Path(folder)
    lines = sorted(
        f"{runtime.sha256_file(path)}  {path.relative_to(folder).as_posix()}\n"
        for path in folder.rglob("*")
        if path.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _code_metadata(copy):
    """What encode gives and decode takes: float32 codes, or a vq_vae's int32 codebook indices."""
    if convert.has_discrete_codes(copy):
        return {"shape": list(copy.index_shape), "dtype": "int32", "codebook_size": copy.codebook_size}
    return {"shape": [copy.latent_dim], "dtype": "float32"}


def _metadata(model, copy, signatures, batch_size, samples, files, notes):
    output_range = [0.0, 1.0] if getattr(model, "backbone", model).output_activation == "sigmoid" else None
    return {
        "format": FORMAT,
        "created_with": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "ai_edge_litert": runtime.find_interpreter().version,
        },
        "model": {
            "name": model.registry_name,
            "class": type(model).__name__,
            "config": model.get_config(),
            "dtype_policy": model.dtype_policy.name,
            "export_config": copy.get_config(),  # the float32 (LSTM: unrolled) copy that was traced
        },
        "input": {
            "shape": list(model.data_shape),
            "dtype": "float32",
            "range": samples.input_range,
            "note": "int8 files take int8 internally; the edge runtime quantizes float inputs with the "
            "scale and zero point listed per file",
        },
        "output": {"shape": list(model.data_shape), "dtype": "float32", "range": output_range},
        "latent_dim": model.latent_dim,
        "code": _code_metadata(copy),
        **({"labels": {"dtype": "int32", "shape": [], "num_classes": copy.num_classes, "form": "class ids"}}
           if convert.is_conditional(copy) else {}),
        "batch_size": batch_size,
        "signatures": {name: {**dataclasses.asdict(runtime.SIGNATURES[name]), "inputs": list(convert.input_names(copy, name))}
                       for name in signatures},
        "calibration": {"data": samples.source, "samples": len(samples.calibration)} if samples.source else None,
        "verification": {
            "note": samples.note,
            "samples": len(samples.verification),
            "targets": {
                **{mode: f"max abs diff <= {limit:g} (reconstruct), times the output's peak |value| beyond 1"
                   for mode, limit in MAX_ABS_TARGETS.items()},
                "dynamic": f"PSNR >= Keras - {PSNR_DROP_TARGET_DB:g} dB",
                "int8": f"PSNR >= Keras - {PSNR_DROP_TARGET_DB:g} dB",
            },
            "notes": notes,
        },
        "files": files,
    }
