"""Runs every .tflite file of exports on this machine's interpreter; what `aezoo verify` starts.

    python -m export.edge.run_files EXPORT_DIR... --out OUT_DIR [--timing-runs N] [--kernels default|reference]

Each file runs every signature on the inputs saved in its export's reference.npz, through the
edge runtime (`export.edge.runtime`: the quantization, batching and sha256 checks a board gets).
OUT_DIR/<i> (i: the export's position) receives outputs.npz (`<file>/<signature>/<output>`, float32) and run.json (the
interpreter, the machine, and per file the milliseconds of one single-example `reconstruct`, or
why the interpreter refused the file). `aezoo verify --platform aarch64` runs this script in an
emulated aarch64 Python, so it imports numpy and the interpreter only (through export.edge.runtime),
never TensorFlow.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from export.edge import runtime

REFERENCE_FILE = "reference.npz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("export_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timing-runs", type=int, default=0, help="timed single-example reconstruct calls per file")
    parser.add_argument("--kernels", choices=tuple(runtime.KERNELS), default="default", help="the interpreter's kernels")
    args = parser.parse_args(argv)
    for i, export_dir in enumerate(args.export_dirs):  # one process for all: the emulated Python starts slowly
        run_export(export_dir, args.out / str(i), args.timing_runs, args.kernels)


def run_export(export_dir, out_dir, timing_runs, kernels="default"):
    """Writes out_dir/outputs.npz and out_dir/run.json for every .tflite file of one export."""
    with np.load(export_dir / REFERENCE_FILE) as reference:
        inputs = {key.split("/", 1)[1]: reference[key] for key in reference.files if key.startswith("inputs/")}
    interpreter = runtime.find_interpreter()
    outputs, files = {}, {}
    for path in sorted(export_dir.glob("*.tflite")):
        try:
            model = runtime.load(path, kernels=kernels)
        except runtime.EdgeError as error:  # e.g. tflite_runtime 2.14 and a dynamic-range file
            files[path.name] = {"refused": str(error)}
            continue
        labels = inputs.get(runtime.LABELS)  # a cvae's class ids, saved beside its examples
        for signature in model.signatures:
            for name, value in model.run(signature, inputs[runtime.SIGNATURES[signature].input], labels).items():
                outputs[f"{path.name}/{signature}/{name}"] = value
        files[path.name] = {"ms": _median_ms(model, inputs["x"][:1], None if labels is None else labels[:1], timing_runs)}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "outputs.npz", **outputs)
    run = {"runtime": interpreter.name, "version": interpreter.version, "kernels": kernels, "machine": platform.machine(),
           "files": files}
    (out_dir / "run.json").write_text(json.dumps(run, indent=2))


def _median_ms(model, example, label, runs):
    """Median milliseconds of `runs` reconstruct calls on one example (a cvae's: with its `label`) after one
    warm-up (None: not timed)."""
    if runs < 1:
        return None
    model.reconstruct(example, label)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        model.reconstruct(example, label)
        timings.append((time.perf_counter() - start) * 1000)
    return float(np.median(timings))


if __name__ == "__main__":
    main()
