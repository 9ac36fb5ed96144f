"""`aezoo benchmark export`: size, latency and quality of every family's TFLite and ONNX files, as a table.

Not a test. Each family is trained briefly on mnist5k (so the quality columns mean something),
exported in every requested mode, and each file is timed in the edge runtime on single
held-out examples at 1 and 2 interpreter threads. Latency is per sample (batch 1) through
`export.edge.runtime` (input checks and int8 quantization included); quality is the export's own
verification against the Keras model. The ONNX row times onnx/reconstruct.onnx in onnxruntime
(its size: all signature files together, as the TFLite file holds every signature).

With `--micro`, each export also gets its micro/ folder (TFLite Micro), and a second table gives
every micro file's flash bytes, tensor arena measured in the TFLM interpreter, and its check
against the reference kernels; lstm_ae and transformer_ae are then built with the options that
avoid the kernels TFLM lacks (`MICRO_OPTIONS`).

With `--presets`, each family has its Fashion-MNIST preset's architecture instead of the small
default (still trained on mnist5k): the sizes of the files a user of the presets deploys. A
file's fixed part (op and tensor tables) weighs more beside the small defaults' weights.

A column gives the verdict each float32 and float16 file's metadata.json records on the GPU
delegate (`export.builder.gpu_delegate`); latency on a phone's GPU is not measured here (no mobile
GPU is attached).

With `--aarch64`, every export's .tflite files also run emulated on a Cortex-A72 (`aezoo verify`,
qemu-user, one process per interpreter for all exports): a column gives each interpreter's
difference from itself on x86_64 and the emulated latency (qemu's, not a board's).

Example:
    aezoo benchmark export
    aezoo benchmark export --micro --modes int8
    aezoo benchmark export --presets --modes float32,int8 --no-onnx
    python -m recipes.tools.export_benchmark --families conv_ae,vae --modes float32,int8 --epochs 1

`--docs` (alias `--readme`) also writes the tables into docs/: the main one into benchmark-export.md
(section `export-presets` with `--presets`, else `export-families`); the micro/ one into micro.md (`export-micro`). Each starts with the
command that made it.
"""

import importlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recipes.cli import arguments
from recipes.tools.doc_tables import write_docs_section

# family -> (zoo model, options, reads the images as (rows, columns) sequences)
FAMILIES = {
    "dense_ae": ("dense_ae", {}, False),
    "conv_ae": ("conv_ae", {"filters": (16, 32)}, False),
    "lstm_ae": ("lstm_ae", {"units": (64,)}, True),
    "transformer_ae": ("transformer_ae", {"embed_dim": 32, "num_heads": 2, "num_layers": 1, "ff_dim": 64}, False),
    "vae": ("vae", {"backbone": "conv", "backbone_config": {"filters": [16, 32]}}, False),
}
# family -> the Fashion-MNIST preset whose architecture `--presets` benchmarks.
PRESET_ARCHITECTURES = {
    "dense_ae": "dense_ae_fashion_mnist",
    "conv_ae": "conv_ae_fashion_mnist",
    "lstm_ae": "lstm_ae_fashion_mnist",
    "transformer_ae": "transformer_ae_fashion_mnist",
    "vae": "vae_conv_fashion_mnist",
}
# The options each family needs for TFLite Micro (it has no TILE or GELU kernel).
MICRO_OPTIONS = {"lstm_ae": {"repeat": "broadcast"}, "transformer_ae": {"activation": "relu"}}
LATENT_DIM = 16
THREADS = (1, 2)
WARMUP_RUNS = 10


def _parser():
    parser = arguments.Parser(prog="aezoo benchmark export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma list of " + ", ".join(FAMILIES))
    parser.add_argument("--modes", default="float32,float16,dynamic,int8", help="comma list of quantize modes")
    parser.add_argument("--epochs", type=arguments.count, default=5, help="training epochs on mnist5k's 4000 training images")
    parser.add_argument("--runs", type=arguments.count, default=200, help="timed single-sample runs per file and thread count")
    parser.add_argument("--verify-samples", type=arguments.count, default=200, help="held-out images the quality is measured on")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX row (no tf2onnx installed)")
    parser.add_argument("--out", help="keep the exports in this folder (default: a temp folder, removed)")
    parser.add_argument("--seed", type=arguments.count_or_zero, default=0)
    parser.add_argument("--micro", action="store_true", help="also micro/ files: flash and measured TFLM arena per file")
    parser.add_argument("--aarch64", action="store_true", help="also run the .tflite files on an emulated Cortex-A72")
    parser.add_argument(
        "--presets", action="store_true",
        help="each family with its Fashion-MNIST preset's architecture (the files a user deploys), not the small default",
    )
    parser.add_argument(
        "--docs", "--readme", dest="docs", action="store_true",
        help="also write the tables into docs/benchmark-export.md and docs/micro.md (--readme: the same)",
    )
    return parser


def architecture(family, preset_architecture=False, micro_target=False):
    """(zoo model name, options) of the benchmark's `family` model: the small default, or its preset's."""
    registry_name, options, _ = FAMILIES[family]
    if preset_architecture:
        from zoo import presets

        options = presets.architecture_options(PRESET_ARCHITECTURES[family])
        # The benchmark's data, latent size and float32 training, not the preset's.
        options = {k: v for k, v in options.items() if k not in ("dtype", "input_shape", "latent_dim")}
    return registry_name, {**options, **(MICRO_OPTIONS.get(family, {}) if micro_target else {})}


def train(family, data, epochs, seed, micro_target=False, preset_architecture=False):
    """The benchmark's model of `family` (see `architecture`), trained on `data` for `epochs`."""
    import keras

    import zoo

    registry_name, options = architecture(family, preset_architecture, micro_target)
    keras.utils.set_random_seed(seed)
    model = zoo.create(registry_name, input_shape=data.input_shape, latent_dim=LATENT_DIM, **options)
    if registry_name == "vae":
        model.compile(keras.optimizers.Adam(2e-3))
        model.fit(data.x_train, epochs=epochs, batch_size=64, verbose=0)
    else:
        model.compile(keras.optimizers.Adam(2e-3), loss=zoo.losses.bce)
        model.fit(data.x_train, data.x_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def latency_ms(path, samples, threads, runs):  # a .tflite or .onnx file
    """(p50, p95) milliseconds of one `reconstruct` call on a single example."""
    from export import runtime

    model = runtime.load(path, num_threads=threads)
    for i in range(WARMUP_RUNS):
        model.reconstruct(samples[i % len(samples)][None])
    timings = []
    for i in range(runs):
        example = samples[i % len(samples)][None]
        start = time.perf_counter()
        model.reconstruct(example)
        timings.append((time.perf_counter() - start) * 1000)
    return tuple(float(v) for v in np.percentile(timings, [50, 95]))


def main(argv=None):
    """Runs the benchmark and prints its markdown table; returns the exit code.

    Args:
        argv: command-line arguments (see `--help`); None reads sys.argv.

    Example:
        >>> main(["--families", "conv_ae", "--modes", "float32,int8", "--epochs", "1"])
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    import zoo
    from export.builder.exporter import parse_modes

    families = _families(args.families)
    modes = parse_modes(args.modes)
    images = zoo.data.load("mnist5k")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="aezoo-benchmark-"))
    rows, micro_rows = [], []  # rows: (export folder, file, table row without the aarch64 cell)
    try:
        for family in families:
            family_rows, family_micro_rows = _benchmark_family(family, images, modes, args, root / family)
            rows += family_rows
            micro_rows += family_micro_rows
        emulated = _aarch64_cells(rows, args.runs) if args.aarch64 else {}
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    command = "`aezoo benchmark export" + "".join(f" {shlex.quote(a)}" for a in argv if a not in ("--docs", "--readme")) + "`"
    sections = {"export-presets" if args.presets else "export-families": _export_table(command, args, rows, emulated)}
    if args.micro:
        sections["export-micro"] = _micro_table(command, micro_rows)
    print("\n\n".join(sections.values()))
    if args.docs:
        for section, text in sections.items():
            write_docs_section(section, text)
    return 0


def _families(names):
    """The families of a comma list, each checked against `FAMILIES`."""
    from zoo.errors import unknown_name

    families = [name.strip() for name in names.split(",") if name.strip()]
    for name in families:
        if name not in FAMILIES:
            raise unknown_name("benchmark family", name, FAMILIES)
    return families


def _benchmark_family(family, images, modes, args, out_dir):
    """Trains, exports and times one family: (its rows as in `main`, its micro/ table rows)."""
    from export.builder.exporter import export_model, tflite_name
    from export.builder.onnx_target import onnx_name

    data = images.as_sequences() if FAMILIES[family][2] else images
    started = time.perf_counter()
    model = train(family, data, args.epochs, args.seed, args.micro, args.presets)
    report = export_model(model, out_dir, quantize=modes, calibration_data=data, verify_samples=args.verify_samples,
                          micro_target=args.micro, onnx=not args.no_onnx)
    micro_rows = _micro_rows(family, out_dir)
    print(f"{family}: trained and exported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    checks = {check.mode: check for check in report.checks}
    samples = data.x_test[: args.verify_samples]
    files = {mode: tflite_name(mode) for mode in modes}
    if not args.no_onnx:
        files["onnx"] = onnx_name("reconstruct")
    rows = []
    for mode, file_name in files.items():
        timings = [latency_ms(out_dir / file_name, samples, t, args.runs) for t in THREADS]
        rows.append((out_dir, file_name, _row(family, mode, checks, timings, gpu_delegate_cell(out_dir, file_name))))
    return rows, micro_rows


def _row(family, mode, checks, timings, gpu_cell):
    """One file's table row, without the aarch64 cell."""
    from export.builder.exporter import format_size

    check = checks[mode]
    runs_on_2_14 = {None: "-", True: "yes", False: "no"}[check.tflite_runtime_2_14]
    share = (f" ({check.size_bytes / checks['float32'].size_bytes:.2f}x)"
             if mode != "float32" and "float32" in checks else "")
    return (
        f"| {family} | {mode} | {format_size(check.size_bytes)}{share} | "
        + " | ".join(f"{p50:.3f} / {p95:.3f}" for p50, p95 in timings)
        + f" | {check.judged_diff:.1e} | {check.psnr_db:.2f} ({check.keras_psnr_db:.2f}) | {runs_on_2_14} | "
        + f"{gpu_cell} |"
    )


def _export_table(command, args, rows, emulated):
    """The main table: its header line (the command, runtimes, cores, runs) and a row per file."""
    from export import runtime

    onnx_runtime = "" if args.no_onnx else f" (ONNX: onnxruntime {importlib.import_module('onnxruntime').__version__})"
    return "\n".join([
        f"{command}: {runtime.find_interpreter()}{onnx_runtime}, {os.cpu_count()} CPU cores, batch 1, {args.runs} "
        f"runs after {WARMUP_RUNS} warm-up; {'preset architectures' if args.presets else 'models'} trained "
        f"{args.epochs} epochs on mnist5k, quality on {args.verify_samples} held-out images",
        "",
        "| model | mode | size (x float32) | latency ms p50 / p95, 1 thread | 2 threads | max abs diff vs Keras (ONNX: "
        "all signatures) | PSNR dB (Keras) | tflite_runtime 2.14 | GPU delegate takes every op | "
        "aarch64 vs x86_64 (Cortex-A72, emulated) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"{row} {emulated.get((folder, file), '-')} |" for folder, file, row in rows),
    ])


def _micro_table(command, micro_rows):
    """The micro/ table: its header line (the command, the TFLM version) and the rows of every export."""
    from export import micro

    return "\n".join([
        f"{command}, micro/ files (batch 1; int8, or int16x8 for an LSTM or Transformer that quantizes cleanly) in "
        f"tflite-micro {micro.tflm_version()}: flash = the model array; arena = the smallest that ran in its "
        f"interpreter, and with the {micro.ARENA_MARGIN:.0%} margin micro.json states",
        "",
        "| model | file | flash bytes | arena bytes measured | arena bytes (+margin) | code diff (steps) | "
        "PSNR dB (reference kernels) | ops |",
        "|---|---|---|---|---|---|---|---|",
        *micro_rows,
    ])


def gpu_delegate_cell(out_dir, file_name):
    """'yes', 'NO (OPS)' or '-' (a file the GPU delegate is not given): the export's metadata.json verdict."""
    import json

    from export import runtime

    verdict = json.loads((out_dir / runtime.METADATA_FILE).read_text())["files"][file_name].get("gpu_delegate")
    if verdict is None:
        return "-"
    return "yes" if verdict["compatible"] else f"NO ({', '.join(verdict['ops'])})"


def _aarch64_cells(rows, runs):
    """{(export folder, file): its emulated Cortex-A72 results} of every .tflite file, in one verify call."""
    from export import aarch64

    folders = list(dict.fromkeys(folder for folder, _, _ in rows))
    # Fewer timed runs than natively: qemu runs the interpreter tens of times slower.
    reports = dict(zip(folders, aarch64.verify(folders, "aarch64", ("cortex-a72",), timing_runs=max(1, runs // 20))))
    return {(folder, file): reports[folder].emulated_summary(file) for folder, file, _ in rows}


def _micro_rows(family, out_dir):
    """Table rows of an export's micro.json (none when the export has no micro/ folder)."""
    import json

    from export import micro

    listing = out_dir / micro.MICRO_DIR / micro.MICRO_FILE
    if not listing.is_file():
        return []
    rows = []
    for file, entry in json.loads(listing.read_text())["files"].items():
        check = entry["verification"]
        steps = "-" if check["max_code_steps"] is None else micro.code_steps_text(check)
        quality = "-" if check["psnr_db"] is None else f"{check['psnr_db']:.2f} ({check['reference_psnr_db']:.2f})"
        rows.append(
            f"| {family} | {file} | {entry['flash_bytes']:,} | {entry['arena_measured_bytes']:,} | "
            f"{entry['arena_bytes']:,} | {steps} | {quality} | {len(entry['ops'])} |"
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
