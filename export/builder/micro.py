"""Microcontroller target: single-signature quantized files for TensorFlow Lite Micro (TFLM), as C arrays.

`aezoo export --micro` adds a `micro/` folder to an export:
    model_<signature>_<precision>.tflite
                                    one signature per file (TFLM runs only a file's subgraph 0,
                                    and some multi-subgraph int8 files crash its allocator);
                                    precision int8, or int16x8 for LSTM and attention graphs (`preferred_precision`)
    model_<signature>_<precision>.cc/.h
                                    the same bytes as an aligned const array and its length
    micro.json                      per file: signature, input shape, arena and flash bytes,
                                    the resolver registrations a firmware needs, verification

The tensor arena is measured in the TFLM interpreter itself: the smallest arena that loads and
invokes the file, found by binary search in a child process (an arena a few bytes too small
segfaults TFLM instead of raising), plus `ARENA_MARGIN`. Each file is then verified in TFLM
against ai-edge-litert's reference kernels on held-out examples.

This module imports only the standard library and numpy at the top (TFLM and ai-edge-litert on
use), so `MicroModel` works where TensorFlow is absent; the exporter passes the conversion in.

Example:
    >>> from export import micro
    >>> model = micro.load("out/micro/model_encode_int8.tflite")  # needs pip install tflite-micro
    >>> codes = model.encode(x)
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from export.edge.interpreter import SIGNATURES, EdgeError, dequantize, quantize, takes_ids
from export.edge.micro_runtime import (
    MICRO_DIR,
    MICRO_FILE,
    MicroModel,
    find_tflm,
    tflm_version,
)

# The signatures a board runs: anomaly scores (reconstruct) and features (encode); a VAE's
# distribution and its generator too (`sample` is `decode` of noise the board draws itself).
BOARD_SIGNATURES = ("reconstruct", "encode")
VAE_BOARD_SIGNATURES = ("encode_distribution", "decode")
# Host TFLM (64-bit pointers) and a board's build (CMSIS-NN kernels' scratch buffers, another
# TFLM version) need different arenas for one file; the margin covers that drift.
ARENA_MARGIN = 0.10
ARENA_ALIGNMENT = 16  # TFLM aligns arena allocations to 16 bytes; the search stops at this step
ARENA_CEILING = 64 << 20  # a file that needs more is not a microcontroller model
CODE_STEPS_TARGET = 2  # int8 steps between TFLM's and the reference kernels' codes (int16 files: 2 * 256 steps)
PSNR_MARGIN_DB = 0.5  # TFLM's reconstruction PSNR may lie this far below the reference kernels'
INDEX_AGREEMENT_TARGET = 0.99  # integer codes (a vq_vae's indices): share equal to the reference kernels'
CODE_OUTPUTS = ("code", "z_mean", "z_log_var")
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")
# TFLM kernels the zoo's default graphs need but TFLM lacks, and the model option avoiding each.
AVOIDED_BY = {
    "TILE": "build the model with repeat='broadcast' (lstm_ae, or a VAE's backbone_config with backbone='lstm'; "
    "same weights, so load them into it)",
    "GELU": "train the model with activation='relu' (transformer_ae, or a VAE's backbone_config with "
    "backbone='transformer')",
}
# Resolver methods whose names are not the op name in CamelCase.
RESOLVER_EXCEPTIONS = {"BATCH_MATMUL": "AddBatchMatMul", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM"}


def preferred_precision(amplifies_rounding):
    """The quantization a model's micro files get: "int8", or "int16x8" for a graph that amplifies
    rounding differences, a recurrent or an attention one (unless its conversion is degenerate,
    see `degenerate_tensors`).

    int16x8 = int8 weights with int16 activations, inputs and outputs. TFLM's int8
    FULLY_CONNECTED and the reference kernels' round 1 step apart now and then from identical
    inputs. An unrolled LSTM re-quantizes its state at every time step, so this grows over 28
    steps: the LSTM preset's int8 codes differed by 35 steps, and int8 alone cost its
    reconstruction 7.4 dB against Keras (12.7 dB vs 20.1); attention's softmax widens it too
    (the Transformer preset's int8 codes: 3 steps). int16 activations: the LSTM's codes 14 int16
    steps apart (0.05 int8 steps) and 20.1 dB (docs/micro.md).
    """
    return "int16x8" if amplifies_rounding else "int8"


def degenerate_tensors(content):
    """Indices of the tensors of a .tflite file that the quantizer gave a non-finite scale.

    The int16x8 quantizer does so when an LSTM's first time step is zero in every calibration
    example (the top row of MNIST digits read as a sequence): that step's FULLY_CONNECTED gets
    all-zero weights with an infinite scale, and the kernels disagree on it (the reference
    kernels saturate its output, TFLM's give zeros).
    """
    from ai_edge_litert.interpreter import Interpreter

    return [
        details["index"]
        for details in Interpreter(model_content=content).get_tensor_details()
        if not np.isfinite(details["quantization_parameters"]["scales"]).all()
    ]


def file_name(signature, precision="int8"):
    """Name of a signature's micro file, e.g. model_encode_int8.tflite."""
    return f"model_{signature}_{precision}.tflite"


def code_steps_target(output_dtype):
    """`CODE_STEPS_TARGET` in steps of a code output of `output_dtype` ("int8" or "int16")."""
    return CODE_STEPS_TARGET << (np.iinfo(output_dtype).bits - 8)


def code_steps_text(verification):
    """How a micro.json verification's code difference reads in tables: '1 steps', '14 int16 steps'."""
    steps, unit = verification["max_code_steps"], verification["code_step"]
    return f"{steps} steps" if unit == "int8" else f"{steps} {unit} steps"


def board_signatures(signatures):
    """The signatures of an export that get micro files: `BOARD_SIGNATURES`, and a VAE's two more
    (an aae's or wae's decode: the generator of their prior draws)."""
    if "encode_distribution" in signatures:
        return BOARD_SIGNATURES + VAE_BOARD_SIGNATURES
    return BOARD_SIGNATURES + (("decode",) if "sample" in signatures else ())


def resolver_registration(op):
    """The `tflite::MicroMutableOpResolver` call that registers a builtin op: CONV_2D -> 'AddConv2D()'."""
    # Parts starting with a digit keep their case: CONV_2D -> Conv2D, MAX_POOL_2D -> MaxPool2D.
    parts = (part if part[0].isdigit() else part.capitalize() for part in op.split("_"))
    return f"{RESOLVER_EXCEPTIONS.get(op) or 'Add' + ''.join(parts)}()"


# --- C arrays ---------------------------------------------------------------------------------------
def write_c_array(content, folder, stem):
    """Writes `<stem>.h` (declarations) and `<stem>.cc` (the bytes, 16-byte aligned); returns the names.

    TFLM reads the model in place from flash, and its flatbuffer needs 16-byte aligned buffers.
    """
    symbol = "g_" + re.sub(r"\W", "_", stem)
    guard = f"AEZOO_{symbol.upper()}_H_"
    header = (
        f"// {stem}.tflite as a C array (written by aezoo export --micro).\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n#endif  // {guard}\n"
    )
    rows = ",\n".join(
        "    " + ", ".join(f"0x{byte:02x}" for byte in content[start : start + 12]) for start in range(0, len(content), 12)
    )
    source = (
        f'#include "{stem}.h"\n\n'
        f"alignas(16) const unsigned char {symbol}[] = {{\n{rows}\n}};\n"
        f"const unsigned int {symbol}_len = {len(content)};\n"
    )
    (folder / f"{stem}.h").write_text(header)
    (folder / f"{stem}.cc").write_text(source)
    return {"source": f"{stem}.cc", "header": f"{stem}.h", "array": symbol, "length": f"{symbol}_len"}


# --- arena measurement ------------------------------------------------------------------------------
class _ArenaProbe:
    """A child process that loads and invokes one file in TFLM at each arena size it is sent.

    A crash (too small an arena can segfault TFLM) ends only the child; the next probe starts
    a new one. Its stderr, where TFLM reports a missing kernel, is kept in a temp file.
    """

    def __init__(self, path):
        self.path = path
        self.log = tempfile.TemporaryFile(mode="w+")
        self.child = None

    def runs(self, arena):
        if self.child is None:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "export.builder.micro", "probe", str(self.path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                cwd=Path(__file__).resolve().parents[1],
            )
        try:
            self.child.stdin.write(f"{arena}\n")
            self.child.stdin.flush()
            answer = self.child.stdout.readline().strip()
        except BrokenPipeError:
            answer = ""
        if answer not in ("ok", "fail"):  # the child died on this arena; the next probe starts another
            self._stop()
            return False
        return answer == "ok"

    def _stop(self):
        for pipe in (self.child.stdin, self.child.stdout):
            try:
                pipe.close()
            except BrokenPipeError:
                pass
        self.child.wait()
        self.child = None

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def close(self):
        if self.child is not None:
            self._stop()  # closing stdin ends the child's loop
        self.log.close()


def _probe_main(path):
    """The child of `_ArenaProbe`: for each arena size on stdin, 'ok' if the file runs in it, else 'fail'."""
    tflm = find_tflm()
    content = Path(path).read_bytes()
    for line in sys.stdin:
        try:
            interpreter = tflm.Interpreter.from_bytes(content, arena_size=int(line))
            interpreter.invoke()  # kernels' scratch buffers are claimed in prepare; invoke proves them
            answer = "ok"
        except RuntimeError:
            answer = "fail"
        print(answer, flush=True)


def measure_arena(path, ceiling=ARENA_CEILING):
    """The smallest tensor arena (bytes, a multiple of 16) in which TFLM loads and invokes `path`.

    Raises:
        EdgeError: the file needs a kernel TFLM lacks (naming the op and the model option that
            avoids it), or does not run even in `ceiling` bytes.

    Example:
        >>> measure_arena("out/micro/model_reconstruct_int8.tflite")  # e.g. 20048
    """
    find_tflm()
    path = Path(path)
    probe = _ArenaProbe(path)
    try:
        if not probe.runs(ceiling):
            raise _refusal(path, probe.stderr(), ceiling)
        # Double up to the first arena that runs, then halve the gap down to the alignment step.
        low, high = 0, min(4096, ceiling)
        while not probe.runs(high):
            low, high = high, min(high * 2, ceiling)
        while high - low > ARENA_ALIGNMENT:
            middle = (low + high) // 2 // ARENA_ALIGNMENT * ARENA_ALIGNMENT
            low, high = (low, middle) if probe.runs(middle) else (middle, high)
        return high
    finally:
        probe.close()


def _refusal(path, stderr, ceiling):
    missing = sorted(set(MISSING_OP.findall(stderr)))
    if missing:
        avoid = "; ".join(f"to avoid {op}, {AVOIDED_BY[op]}" for op in missing if op in AVOIDED_BY)
        return EdgeError(
            f"{path.name} needs {', '.join(missing)}, which TFLite Micro has no kernel for; "
            + (avoid or "change the model so it avoids that op")
        )
    first = next((line for line in stderr.splitlines() if line.strip()), "no message")
    return EdgeError(f"{path.name} does not run in TFLite Micro even with a {ceiling >> 20} MB arena ({first.strip()})")


def with_margin(arena):
    """The arena a firmware should reserve: the measured one plus `ARENA_MARGIN`, 16-byte aligned."""
    return math.ceil(arena * (1 + ARENA_MARGIN) / ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _tensor(details, name=None):
    scale, zero_point = details["quantization"]
    entry = {"name": name, "shape": [int(d) for d in details["shape"]], "dtype": np.dtype(details["dtype"]).name}
    entry.update(scale=float(scale), zero_point=int(zero_point))
    return entry


def _reference_kernels(content, signature, values):
    """ai-edge-litert's reference kernels (BUILTIN_REF, the portable C code TFLM's kernels come from)
    on float `values`: (input details, [(output name, details)] in TFLM's output order, the quantized
    inputs, {output name: raw quantized outputs})."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    runner = interpreter.get_signature_runner(signature)
    input_name = SIGNATURES[signature].input
    input_details, output_details = runner.get_input_details()[input_name], runner.get_output_details()
    by_index = {details["index"]: name for name, details in output_details.items()}
    # TFLM's get_output(i) follows the subgraph's output list, not the signature's names.
    ordered = [(by_index[d["index"]], output_details[by_index[d["index"]]]) for d in interpreter.get_output_details()]
    quantized = quantize(values, input_details)
    outputs = {name: [] for name, _ in ordered}
    for example in quantized:
        result = runner(**{input_name: example[None]})
        for name, _ in ordered:
            outputs[name].append(result[name])
    return input_details, ordered, quantized, {name: np.concatenate(parts) for name, parts in outputs.items()}


# --- the micro/ folder ------------------------------------------------------------------------------
@dataclasses.dataclass
class MicroCheck:
    """How one micro file ran in TFLM against the reference kernels."""

    file: str
    signature: str
    flash_bytes: int
    arena_bytes: int
    max_code_steps: int | None  # code outputs: max |TFLM - reference| in steps of their type
    psnr_db: float | None  # reconstruction outputs: PSNR of TFLM's result
    reference_psnr_db: float | None
    code_step: str = "int8"  # the code outputs' type: int8, or int16 in int16x8 files
    note: str | None = None  # why the file is not of its model's preferred precision
    index_agreement: float | None = None  # integer codes: share of indices equal to the reference kernels'

    @property
    def met(self):
        codes_met = self.max_code_steps is None or self.max_code_steps <= code_steps_target(self.code_step)
        psnr_met = self.psnr_db is None or self.psnr_db >= self.reference_psnr_db - PSNR_MARGIN_DB
        indices_met = self.index_agreement is None or self.index_agreement >= INDEX_AGREEMENT_TARGET
        return codes_met and psnr_met and indices_met

    def to_json(self):
        int16 = f" ({code_steps_target('int16')} int16 steps)" if self.code_step == "int16" else ""
        if self.index_agreement is not None:
            return {"index_agreement": self.index_agreement, "target": f"index agreement >= {INDEX_AGREEMENT_TARGET:.0%}",
                    "met": self.met}
        return {
            "max_code_steps": self.max_code_steps,
            "code_step": self.code_step,
            "psnr_db": self.psnr_db,
            "reference_psnr_db": self.reference_psnr_db,
            "target": f"codes within {CODE_STEPS_TARGET} int8 steps{int16}, PSNR >= reference - {PSNR_MARGIN_DB:g} dB",
            "met": self.met,
        }

    def row(self):
        steps = "-" if self.max_code_steps is None else code_steps_text(self.to_json())
        if self.index_agreement is not None:
            steps = f"{self.index_agreement:.1%} indices equal"
        psnr = "-" if self.psnr_db is None else f"{self.psnr_db:.2f} ({self.reference_psnr_db:.2f})"
        return (
            f"| {MICRO_DIR}/{self.file} | {self.flash_bytes:,} | {self.arena_bytes:,} | {steps} | {psnr} | "
            f"{'met' if self.met else 'MISSED'} |"
        )


def report_lines(checks):
    """The rows `aezoo export --micro` prints below the TFLite table."""
    lines = [
        f"micro files, verified in tflite-micro against ai-edge-litert's reference kernels "
        f"(arena: measured + {ARENA_MARGIN:.0%}):",
        "| file | flash bytes | arena bytes | code diff (steps) | PSNR dB (reference) | target |",
        "|---|---|---|---|---|---|",
    ]
    lines += [check.row() for check in checks]
    lines += [f"note: {MICRO_DIR}/{check.file}: {check.note}" for check in checks if check.note]
    lines += [
        f"MISSED: {MICRO_DIR}/{check.file}: {check.to_json()['target']} not met; check it before flashing"
        for check in checks
        if not check.met
    ]
    return lines


def write_micro(folder, signatures, convert_one, inputs, targets, peak, latent_dim, input_range):
    """Writes the micro/ folder of an export: files, C arrays, measured arenas, TFLM verification.

    Args:
        folder: the micro/ folder to create (inside the export's staging folder).
        signatures: the export's signatures; `board_signatures` of them get files.
        convert_one: fn(signature) -> (bytes of a batch-1 single-signature .tflite file, its
            precision "int8" or "int16x8", a note saying why it is not the preferred one or None).
        inputs: {input name: float array} of held-out verification inputs (x, z).
        targets: what reconstructions are compared with (the held-out x).
        peak: the PSNR peak value.
        latent_dim: the code width (recorded for decode files).
        input_range: the data's bounds that `MicroModel` enforces on x ([0, 1] images), or None
            (standardised data: values beyond the int8 range saturate, as on a board).

    Returns:
        The list of `MicroCheck`s, one per file.

    Raises:
        EdgeError: a file needs an op TFLM lacks (naming the model option that avoids it).
    """
    folder.mkdir()
    listing, checks = {}, []
    for signature in board_signatures(signatures):
        name, entry, reference_run = _write_micro_file(folder, signature, convert_one(signature), inputs,
                                                       input_range, latent_dim)
        check = _verify_micro_file(folder / name, entry, reference_run, targets, peak)
        entry["verification"] = check.to_json()
        listing[name] = entry
        checks.append(check)
    (folder / MICRO_FILE).write_text(json.dumps(_listing(listing), indent=2) + "\n")
    return checks


def _write_micro_file(folder, signature, converted, inputs, input_range, latent_dim):
    """Writes one signature's file and C array, measures its arena and runs it in the reference kernels.

    Returns:
        (file name, its micro.json entry, (ordered outputs, quantized inputs, reference outputs)).
    """
    # Export time only (TensorFlow is there): the export's own op reader, so tables agree.
    from export.builder.convert import op_names

    content, precision, note = converted
    name = file_name(signature, precision)
    (folder / name).write_bytes(content)
    measured = measure_arena(folder / name)
    spec = SIGNATURES[signature]
    x = inputs[spec.input]
    input_details, ordered, quantized, reference = _reference_kernels(content, signature, x)
    entry = {
        "signature": signature,
        "precision": precision,
        "precision_note": note,
        "input_shape": list(x.shape[1:]),
        "input_range": input_range if spec.input == "x" else None,
        "latent_dim": latent_dim,
        "arena_bytes": with_margin(measured),
        "arena_measured_bytes": measured,
        "flash_bytes": len(content),
        "ops": [resolver_registration(op) for op in op_names(content)],
        "c_source": write_c_array(content, folder, name.removesuffix(".tflite")),
        "sha256": hashlib.sha256(content).hexdigest(),
        "input": _tensor(input_details, spec.input),
        "outputs": [_tensor(details, output) for output, details in ordered],
    }
    return name, entry, (ordered, quantized, reference)


def _verify_micro_file(path, entry, reference_run, targets, peak):
    """The `MicroCheck` of one written file: its TFLM outputs against the reference kernels'."""
    ordered, quantized, reference = reference_run
    tflm = MicroModel(path, entry).run_quantized(quantized)
    indices = [o for o, details in ordered if takes_ids(details)]
    agreement = min((float(np.mean(tflm[o] == reference[o])) for o in indices), default=None)
    steps = [int(np.abs(tflm[o].astype(int) - reference[o].astype(int)).max())
             for o in reference if o in CODE_OUTPUTS and o not in indices]
    scores = _reconstruction_psnrs(tflm, reference, ordered, targets, peak)
    return MicroCheck(
        path.name, entry["signature"], entry["flash_bytes"], entry["arena_bytes"], max(steps) if steps else None,
        scores[0][0] if scores else None, scores[0][1] if scores else None, entry["outputs"][0]["dtype"],
        entry["precision_note"], agreement,
    )


def _reconstruction_psnrs(tflm, reference, ordered, targets, peak):
    """[(TFLM's PSNR, the reference kernels' PSNR)] per reconstruction output, in output order."""
    # Export time only (TensorFlow is there): the export's own PSNR, so tables agree.
    from export.builder.quality import psnr

    reconstructions = [o for o in reference if o not in CODE_OUTPUTS]
    return [
        (psnr(targets, dequantize(tflm[o], details), peak), psnr(targets, dequantize(reference[o], details), peak))
        for o, details in ordered if o in reconstructions
    ]


def _listing(files):
    return {
        "format": "aezoo-micro/1",
        "tflite_micro": tflm_version(),
        "arena_note": f"arena_bytes: the smallest tensor arena that ran in the tflite-micro interpreter on this "
        f"host (arena_measured_bytes, 16-byte steps) plus {ARENA_MARGIN:.0%}; a board's build may differ",
        "flash_note": "flash_bytes: the model array only; the interpreter and kernels add their own code size",
        "files": files,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"] and len(sys.argv) == 3:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _probe_main(sys.argv[2])
    else:
        sys.exit("usage: python -m export.builder.micro probe FILE.tflite  (the arena probe's child process)")
