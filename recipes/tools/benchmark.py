"""`aezoo benchmark recipes`: speed and quality figures for the documentation (a command, not a test).

    aezoo benchmark recipes loop [--examples N] [--epochs E] [--docs]    # our loop vs plain fit; float32 vs bf16
    aezoo benchmark recipes full [--only NAME ...] [--docs]               # every recipe on full data vs its baselines
    aezoo benchmark recipes reproduce PRESET [--docs]                     # rerun a preset's card command, compare
    aezoo benchmark recipes micro [--docs]                                # every preset exported for TFLite Micro

`full` shows the Fashion-MNIST presets' runs from their cards (`aezoo presets --build NAME` makes
them) and runs (or reuses, resuming an interrupted one) the other recipes into runs/benchmark/<name>.
All print their tables; `--docs` (alias `--readme`) also writes them into docs/: `full` into results.md,
`loop` into training.md, `reproduce` into presets.md, `micro` into micro.md.
"""

import json
import shlex
import tempfile
import time
from pathlib import Path

import keras

from recipes.cli import arguments
from recipes.tools.build_presets import CONVERGE

# (label, preset name or aezoo arguments)
FULL_RUNS = [
    ("denoise", "conv_ae_denoise_fashion_mnist"),
    ("inpaint", "conv_ae_inpaint_fashion_mnist"),
    ("reduce (conv_ae)", "conv_ae_fashion_mnist"),
    ("reduce (dense_ae)", "dense_ae_fashion_mnist"),
    ("reduce (lstm_ae)", "lstm_ae_fashion_mnist"),
    ("reduce (transformer_ae)", "transformer_ae_fashion_mnist"),
    ("generate", "vae_conv_fashion_mnist"),
    ("generate (M=2)", "vae_conv_2d_fashion_mnist"),
    # Pretrained 5 epochs, each classifier 10 (the defaults' 3 and 2 keep the recipe's quick runs short).
    ("classify", ["run", "classify", "--set", "model.filters=[32, 64]", "--set", "model.hidden_units=256",
                  "--set", "model.normalization=batch", *CONVERGE, "--set", "train.learning_rate=0.002",
                  "--set", "train.batch_size=128", "--epochs", "5", "--set", "params.classifier_epochs=10",
                  "--set", "params.classifier_learning_rate=0.001", "--data", "fashion_mnist",
                  "--out", "runs/benchmark/classify"]),
    ("anomaly (lstm_ae, co2)", ["run", "anomaly", "--out", "runs/benchmark/anomaly"]),
    ("anomaly (transformer_ae, co2)", ["run", "anomaly", "--model", "transformer_ae", "--out", "runs/benchmark/anomaly-transformer"]),
]


class EpochClock(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.started)

    def samples_per_second(self, examples):
        steady = self.times[1:] or self.times  # the first epoch includes tracing
        return examples / (sum(steady) / len(steady))


def publish(text, docs_section):
    """Prints a benchmark's tables and, when `docs_section` is named, writes them into its page of docs/."""
    from recipes.tools.doc_tables import write_docs_section

    print(text)
    if docs_section:
        write_docs_section(docs_section, text)


def loop(examples, epochs, batch_size, docs):
    """Training throughput: plain `model.fit` on arrays vs our loop; float32 vs mixed_bfloat16."""
    import zoo
    from recipes.engine import distribution, training

    x = zoo.data.load("fashion_mnist").x_train[:examples]

    def build():
        return zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16)

    rows = []
    # bfloat16 runs an order of magnitude slower on a CPU without bf16 units: a tenth of the
    # images gives the same samples/s without an hour of waiting.
    for precision, images in (("float32", x), ("mixed_bfloat16", x[: max(len(x) // 10, batch_size)])):
        with distribution.precision_policy(precision):
            keras.utils.set_random_seed(0)
            clock = EpochClock()
            settings = training.TrainSettings()
            model = training.compile_model(build(), settings, training.make_optimizer(settings, len(images) // batch_size))
            model.fit(images, images, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[clock])
            rows.append(
                (f"plain `model.fit` on arrays, {precision} ({len(images):,} images)", clock.samples_per_second(len(images)))
            )
    settings = training.TrainSettings(
        epochs=epochs, batch_size=batch_size, validation_fraction=0, patience=0, precision="float32", verbose=0
    )
    with tempfile.TemporaryDirectory() as run_dir:
        clock = EpochClock()
        training.train(build, x, settings=settings, run_dir=run_dir, run_name="benchmark", callbacks=[clock])
        rows.append(("aezoo loop (seeded batches, checkpoint + TensorBoard each epoch), float32", clock.samples_per_second(len(x))))
    base = rows[0][1]
    lines = [
        f"conv_ae (default config) on {len(x):,} Fashion-MNIST images, batch {batch_size}, "
        f"{epochs} epochs (the first, with tracing, excluded), "
        f"`aezoo benchmark recipes loop --examples {examples} --epochs {epochs} --batch-size {batch_size}`:",
        "",
        "| training | samples/s | vs plain float32 |",
        "|---|---|---|",
        *[f"| {name} | {speed:,.0f} | {speed / base - 1:+.1%} |" for name, speed in rows],
    ]
    publish("\n".join(lines), "loop" if docs else None)


def _run_name(spec):
    """A FULL_RUNS entry's name for `--only`: its preset, or its run folder's name."""
    return spec if isinstance(spec, str) else Path(spec[spec.index("--out") + 1]).name


def _published_tables(labels):
    """{label: its heading line and table} as the benchmark section of docs/results.md holds them."""
    from recipes.tools.doc_tables import read_docs_section

    text = read_docs_section("benchmark")
    starts = sorted((text.index(f"**{label}** —"), label) for label in labels if f"**{label}** —" in text)
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return {label: text[start:end].strip() for (start, label), end in zip(starts, ends)}


def full(docs, only=None):
    """Prints every recipe's metric tables on its full data: a preset's from its card (the run that
    built it), the other recipes from their runs (run, or resumed, when not finished yet).

    With `only` (names of FULL_RUNS entries), the other entries' tables are kept as docs/results.md has
    them (made anew where it has none): after retraining one preset, without rerunning the others.
    """
    from recipes.tools.build_presets import run_or_resume
    from zoo import presets
    from zoo.errors import unknown_name
    from zoo.presets import metrics_table

    names = [_run_name(spec) for _, spec in FULL_RUNS]
    for name in only or ():
        if name not in names:
            raise unknown_name("benchmark run", name, names)
    kept = _published_tables([label for label, _ in FULL_RUNS]) if only else {}
    sections = []
    for name, (label, spec) in zip(names, FULL_RUNS):
        if only and name not in only and label in kept:
            sections += [kept[label], ""]
            continue
        if isinstance(spec, str):
            card = presets.preset_info(spec)
            command, data, seconds, metrics = card["command"], card["data"], card["train_seconds"], card["metrics"]
        else:
            run = json.loads((run_or_resume(spec) / "metrics.json").read_text())
            command, data = "aezoo " + shlex.join(spec), f"{run['train_examples']:,} train / {run['test_examples']:,} test"
            seconds, metrics = run["train_seconds"], run["metrics"]
        sections += [f"**{label}** — `{command}` ({data}; training {seconds / 60:.1f} min)", "", metrics_table(metrics), ""]
    publish("\n".join(sections), "benchmark" if docs else None)


def reproduce(name, docs):
    """Reruns preset `name`'s card command into runs/reproduce/<name>; prints card vs rerun per metric."""
    from recipes.tools.build_presets import run_or_resume
    from zoo import presets

    info = presets.preset_info(name)
    args = shlex.split(info["command"])[1:]
    out = Path("runs/reproduce") / name
    args[args.index("--out") + 1] = str(out)
    rerun = json.loads((run_or_resume(args) / "metrics.json").read_text())["metrics"]
    lines = [
        f"`{name}`: its card's command `{info['command']}` rerun into {out} "
        "(`aezoo benchmark recipes reproduce " + name + "`):",
        "",
        "| metric | method | card | rerun | difference |",
        "|---|---|---|---|---|",
    ]
    worst = 0.0
    for metric, values in info["metrics"].items():
        for method, card_value in values.items():
            new = rerun[metric][method]
            change = abs(new - card_value) / max(abs(card_value), 1e-12)
            worst = max(worst, change)
            lines.append(f"| {metric} | {method} | {card_value:.4g} | {new:.4g} | {change:.1%} |")
    lines += ["", f"Largest difference {worst:.1%} ({'within' if worst <= 0.05 else 'OUTSIDE'} the 5% target)."]
    publish("\n".join(lines), "reproduce" if docs else None)


def _compiles(compiler, folder, entry):
    """'yes' or 'NO': whether a micro file's C array compiles with `compiler` ('-' without one)."""
    import subprocess

    if compiler is None:
        return "-"
    command = [compiler, "-std=c++17", "-c", entry["c_source"]["source"], "-o", "/dev/null"]
    return "yes" if subprocess.run(command, cwd=folder).returncode == 0 else "NO"


def micro_presets(docs, only=None):
    """Exports every shipped preset for TensorFlow Lite Micro (int8, calibrated on its own data) into
    runs/benchmark/micro/<name>, compiles its C arrays, and tables flash, arena and verification per file.

    With `only` (preset names), the other presets' exports already in runs/benchmark/micro are
    tabled as they are (exported anew where there is none): after retraining one preset.
    """
    import shutil

    from export import export_model, micro
    from zoo import ZooError, from_preset, presets
    from zoo.errors import unknown_name

    compiler = shutil.which("g++")
    shipped = presets.list_presets()
    for name in only or ():
        if name not in shipped:
            raise unknown_name("preset", name, shipped)
    rows = []
    for name in shipped:
        info, out = presets.preset_info(name), Path("runs/benchmark/micro") / name
        try:
            if only is None or name in only or not (out / "micro" / "micro.json").exists():
                export_model(from_preset(name), out, quantize="int8", calibration_data=info["dataset"], micro_target=True)
        except ZooError as error:
            rows.append(f"| `{name}` | refused: {error} | | | | | |")
            continue
        for file, entry in json.loads((out / "micro" / "micro.json").read_text())["files"].items():
            check = entry["verification"]
            quality = (f"code within {micro.code_steps_text(check)}" if check["psnr_db"] is None
                       else f"{check['psnr_db']:.2f} dB ({check['reference_psnr_db']:.2f})")
            rows.append(f"| `{name}` | {file} | {entry['flash_bytes']:,} | {entry['arena_bytes']:,} | {quality} | "
                        f"{'met' if check['met'] else 'MISSED'} | {_compiles(compiler, out / 'micro', entry)} |")
    lines = [
        "Every shipped preset exported with `--micro` (`aezoo benchmark recipes micro"
        + (f" --only {' '.join(only)}`: those exported anew, the others' exports of an earlier run tabled as they are"
           if only else "`") + "; int8, LSTMs and Transformers int16x8, batch 1, "
        "calibrated on the preset's own data): flash = the model array, arena = measured in the TFLite Micro interpreter + 10%; "
        "quality in TFLM (reference kernels in brackets); C array compiled with `g++ -std=c++17 -c`.",
        "",
        "| preset | file | flash bytes | arena bytes | TFLM quality | target | C compiles |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    publish("\n".join(lines), "micro-presets" if docs else None)


def _add_docs_flag(parser, page, what="table"):
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help=f"write the {what} into {page} (--readme: the same)")


def main(argv):
    parser = arguments.Parser(prog="aezoo benchmark recipes")
    sub = parser.add_subparsers(dest="what", required=True)
    loop_args = sub.add_parser("loop", help="training throughput")
    loop_args.add_argument("--examples", type=arguments.count, default=60000)
    loop_args.add_argument("--epochs", type=arguments.count, default=3)
    loop_args.add_argument("--batch-size", type=arguments.count, default=128)
    _add_docs_flag(loop_args, "docs/training.md", "table")
    full_args = sub.add_parser("full", help="every recipe on full data")
    _add_docs_flag(full_args, "docs/results.md", "tables")
    full_args.add_argument("--only", nargs="+", metavar="NAME",
                           help="make only these tables anew (a preset, or a run folder's name: classify, anomaly, "
                                "anomaly-transformer); keep the others as docs/results.md has them")
    reproduce_args = sub.add_parser("reproduce", help="rerun a preset's card command")
    reproduce_args.add_argument("preset")
    _add_docs_flag(reproduce_args, "docs/presets.md", "table")
    micro_args = sub.add_parser("micro", help="every preset exported for TensorFlow Lite Micro")
    _add_docs_flag(micro_args, "docs/micro.md", "table")
    micro_args.add_argument("--only", nargs="+", metavar="PRESET",
                            help="export only these presets again; table the others' existing exports")
    args = parser.parse_args(argv)
    if args.what == "micro":
        micro_presets(args.docs, args.only)
    elif args.what == "loop":
        loop(args.examples, args.epochs, args.batch_size, args.docs)
    elif args.what == "full":
        full(args.docs, args.only)
    else:
        reproduce(args.preset, args.docs)
