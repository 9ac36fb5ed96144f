"""`aezoo`: the command line. Imports are lazy so `aezoo predict` runs where TensorFlow is absent."""

import argparse
import os
import shlex
import sys

from recipes.cli.arguments import Parser, count, count_or_zero

KERNELS_HELP = ("default: the TFLite interpreter's optimized kernels; reference: its reference kernels, slower, "
                "but int8 files give the same outputs on every CPU")


def _label_fractions(text):
    """argparse type of --labels: '1%,10%,100%' or '0.01,0.1,1' -> [0.01, 0.1, 1.0]."""
    try:
        return [float(part.strip().removesuffix("%")) / (100 if part.strip().endswith("%") else 1) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected shares of the labels such as 1%,10%,100% or 0.01,0.1,1, got {text!r}") from None


def _cpus(text):
    """argparse type of --cpu: the emulated CPUs, each one qemu knows by that name."""
    from export.builder.aarch64 import parse_cpus
    from export.edge.runtime import EdgeError

    try:
        return parse_cpus(text)
    except EdgeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser():
    parser = Parser(prog="aezoo", description="Keras autoencoder zoo: train, run recipes, export, predict.")
    common = Parser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="show the log messages of TensorFlow and the runtimes (also AEZOO_VERBOSE=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name, **kwargs):
        return commands.add_parser(name, parents=[common], **kwargs)

    add_command("list", help="models with parameter counts for a default config")
    for add in (_add_train, _add_run, _add_export, _add_predict, _add_verify, _add_presets, _add_finetune, _add_benchmark):
        add(add_command)
    return parser


def _add_train(add_command):
    train = add_command("train", help="train one model on one data set")
    train.add_argument("model", help="model name (see 'aezoo list')")
    train.add_argument("--data", default="mnist5k", help="data set name or path (default: mnist5k)")
    train.add_argument("--epochs", type=count, default=10)
    train.add_argument("--batch-size", type=count, default=128)
    train.add_argument("--latent-dim", type=count, default=16)
    train.add_argument("--loss", default="bce", help="reconstruction loss: bce, mse or psnr (plain autoencoders)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option (filters=[32,64] or model.filters=[32,64]), data option (data.image_size=[64,64]) or training option (train.optimizer=adamw)")
    _add_training_flags(train)


def _add_run(add_command):
    run = add_command("run", help="run a recipe (see 'aezoo run --list')")
    run.add_argument("recipe", nargs="?", help="recipe name, or a config file (FILE.toml, see --dump-config)")
    run.add_argument("--list", action="store_true", help="list the recipes")
    run.add_argument("--data", help="data set name or path")
    run.add_argument("--model", help="model name")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    run.add_argument("--epochs", type=count)
    run.add_argument("--quick", action="store_true", help="small data and few epochs (tests, smoke runs)")
    run.add_argument("--export", action="store_true", help="also export edge artifacts into OUT/export")
    run.add_argument("--from-preset", metavar="PRESET", help="start from a preset's weights: a shipped name, a preset folder or hf://owner/name")
    run.add_argument("--labels", type=_label_fractions, help="classify: label fractions, e.g. 1%%,10%%,100%%")
    run.add_argument("--dump-config", action="store_true",
                     help="print the resolved config of this command line as a config file (TOML) and exit")
    _add_training_flags(run)


def _add_export(add_command):
    export = add_command("export", help="SavedModel + TFLite artifacts, verified against Keras")
    export.add_argument("source", help="a .keras file or a preset: a shipped name, a preset folder or hf://owner/name")
    export.add_argument("--out", required=True)
    export.add_argument(
        "--quantize", help="comma list of float32,float16,dynamic,int8 (default: float32, and int8 with calibration data)"
    )
    export.add_argument("--batch-size", type=count, default=1)
    export.add_argument("--calibration-data", help="data set for int8 calibration and verification (presets: the one they were trained on)")
    export.add_argument("--micro", action="store_true", help="also micro/: TFLite Micro int8 files as C arrays, arenas measured")
    export.add_argument("--onnx", action="store_true", help="also write onnx/<signature>.onnx, verified in ONNX Runtime")
    export.add_argument("--phone", action="store_true",
                        help="also phone/: the float16 and int8 files, the model card and a README of the contract")
    export.add_argument("--aarch64", action="store_true", help="also run the .tflite files on an emulated Cortex-A72 (aezoo verify)")


def _add_predict(add_command):
    predict = add_command("predict", help="run a .tflite or .onnx artifact (no TensorFlow needed)")
    predict.add_argument("artifact", help="a .tflite file or onnx/<signature>.onnx file from 'aezoo export'")
    predict.add_argument("input", help="an image (resized and converted as training reads it), a folder of images, or a .npy file")
    predict.add_argument("-o", "--output", help="where to write the result (.png or .npy; a folder for a folder of images)")
    predict.add_argument("--signature", default="reconstruct", help="reconstruct, encode, decode or sample")
    predict.add_argument("--runtime", choices=("tflite", "micro"), default="tflite", help="micro: a micro/ file in TFLite Micro")
    predict.add_argument("--kernels", default="default", help=KERNELS_HELP)


def _add_verify(add_command):
    verify = add_command("verify", help="re-run an export's .tflite files on x86_64 or emulated aarch64 (no TensorFlow)")
    verify.add_argument("export_dirs", nargs="+", metavar="EXPORT_DIR", help="folders written by 'aezoo export'")
    verify.add_argument("--platform", choices=("x86_64", "aarch64"), default="aarch64")
    verify.add_argument("--cpu", type=_cpus, help="aarch64 only: comma list of cortex-a72 (Pi 4, the default), cortex-a76 (Pi 5)")
    verify.add_argument("--timing-runs", type=count_or_zero, default=0, help="time this many single-example reconstruct calls per file")
    verify.add_argument("--kernels", default="default", help=KERNELS_HELP)


def _add_presets(add_command):
    presets = add_command("presets", help="pretrained presets with their headline metric")
    presets.add_argument("--build", nargs="+", metavar="NAME", help="(maintainers) train presets and write their files")


def _add_finetune(add_command):
    finetune = add_command("finetune", help="continue training a preset on new data")
    finetune.add_argument("preset", help="a shipped name, a preset folder or hf://owner/name; OUT/preset becomes a new preset")
    finetune.add_argument("--data", required=True)
    finetune.add_argument("--epochs", type=count, help="default: 5, or 2 with --quick")
    finetune.add_argument("--batch-size", type=count, default=128)
    finetune.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    finetune.add_argument("--quick", action="store_true", help="small data and few epochs")
    finetune.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                          help="data option (data.image_size=[28,28]), training option (train.learning_rate=3e-4) or params key")
    _add_training_flags(finetune)


def _add_benchmark(add_command):
    bench = add_command("benchmark", help="print a benchmark table (export, recipes, data or models)")
    bench.add_argument("suite", choices=["export", "recipes", "data", "models"])
    bench.add_argument("args", nargs=argparse.REMAINDER)


def _add_training_flags(sub):
    # Defaults of None: a flag left out leaves the value to `--set train.KEY` or the recipe (then TrainSettings').
    sub.add_argument("--precision", choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"], help="default: auto")
    sub.add_argument("--strategy", choices=["auto", "default", "mirrored", "multi_worker"], help="default: auto")
    sub.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    sub.add_argument("--seed", type=count_or_zero, help="default: 0")
    sub.add_argument("--out", default=None, help="run directory (default: runs/<name>)")


def _user_errors():
    """Exception types that are the user's to fix: printed as one line, exit code 2."""
    from export.edge.runtime import EdgeError

    types = [EdgeError]
    if "zoo.errors" in sys.modules:  # only loaded with TensorFlow; no ZooError can exist otherwise
        types.append(sys.modules["zoo.errors"].ZooError)
    return tuple(types)


def _needs_tensorflow(args):
    """False for the commands that only read or run files: predict, verify, listing recipes or presets,
    and for any under the JAX backend."""
    if os.environ.get("KERAS_BACKEND") == "jax":
        return False
    if args.command == "run":
        return bool(args.recipe and not args.list)
    if args.command == "presets":
        return bool(args.build)
    return args.command not in ("predict", "verify")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a bad command line (already reported in one line)
        return stop.code
    # What reproduces this run (recorded in config.json / metrics.json); --resume and --verbose do not change it.
    args.command_line = "aezoo " + shlex.join(a for a in argv if a not in ("--resume", "--verbose"))
    from export.edge.runtime import VERBOSE_ENV

    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # read by zoo and the runtimes, as in the Python API
    if _needs_tensorflow(args):
        import zoo  # noqa: F401  (imports TensorFlow without its start-up lines unless asked for)
    try:
        if args.command == "predict":
            from export.edge.predict import predict_file

            print(predict_file(args.artifact, args.input, args.output, args.signature, args.runtime, args.kernels))
            return 0
        if args.command == "verify":
            from export.builder.aarch64 import verify
            from export.edge.runtime import EdgeError

            if args.cpu and args.platform != "aarch64":
                raise EdgeError(f"--cpu applies to --platform aarch64 only ({args.platform} runs natively); remove it")
            cpus = {"cpus": args.cpu} if args.cpu else {}
            reports = verify(args.export_dirs, args.platform, timing_runs=args.timing_runs, kernels=args.kernels, **cpus)
            print("\n\n".join(map(str, reports)))
            return 1 if any(report.missed for report in reports) else 0
        from recipes.cli import commands

        return getattr(commands, args.command)(args) or 0
    except KeyboardInterrupt:
        print("aezoo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if isinstance(error, _user_errors()):
            print(f"aezoo: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):  # a read-only, missing or full folder; the writers that keep files say what is kept
            where = f" {error.filename}" if error.filename else ""
            print(f"aezoo: error: cannot write or read{where} ({error.strerror or error}); "
                  "choose a folder that exists, is writable and has free space", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
