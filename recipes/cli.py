"""`aezoo`: the command line. Imports are lazy so `aezoo predict` runs where TensorFlow is absent."""

import argparse
import os
import shlex
import sys

from recipes.arguments import Parser, count, count_or_zero


VERBOSE_ENV = "AEZOO_VERBOSE"
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
    from export.aarch64 import parse_cpus
    from export.runtime import EdgeError

    try:
        return parse_cpus(text)
    except EdgeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser():
    parser = Parser(prog="aezoo", description="Keras autoencoder zoo: train, run recipes, export, predict.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help=f"show TensorFlow's C++ log messages (also {VERBOSE_ENV}=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name, **kwargs):
        return commands.add_parser(name, parents=[common], **kwargs)

    add_command("list", help="models with parameter counts for a default config")

    train = add_command("train", help="train one model on one data set")
    train.add_argument("model", help="model name (see 'aezoo list')")
    train.add_argument("--data", default="mnist5k", help="data set name or path (default: mnist5k)")
    train.add_argument("--epochs", type=count, default=10)
    train.add_argument("--batch-size", type=count, default=128)
    train.add_argument("--latent-dim", type=count, default=16)
    train.add_argument("--loss", default="bce", help="reconstruction loss: bce, mse or psnr (plain autoencoders)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option (filters=[32,64]), data option (data.image_size=[64,64]) or training option (train.optimizer=adamw)")
    _add_training_flags(train)

    run = add_command("run", help="run a recipe (see 'aezoo run --list')")
    run.add_argument("recipe", nargs="?", help="recipe name")
    run.add_argument("--list", action="store_true", help="list the recipes")
    run.add_argument("--data", help="data set name or path")
    run.add_argument("--model", help="model name")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    run.add_argument("--epochs", type=count)
    run.add_argument("--quick", action="store_true", help="small data and few epochs (tests, smoke runs)")
    run.add_argument("--export", action="store_true", help="also export edge artifacts into OUT/export")
    run.add_argument("--from-preset", help="start from a pretrained preset's weights")
    run.add_argument("--labels", type=_label_fractions, help="classify: label fractions, e.g. 1%%,10%%,100%%")
    _add_training_flags(run)

    export = add_command("export", help="SavedModel + TFLite artifacts, verified against Keras")
    export.add_argument("source", help="a .keras file or a preset name")
    export.add_argument("--out", required=True)
    export.add_argument(
        "--quantize", help="comma list of float32,float16,dynamic,int8 (default: float32, and int8 with calibration data)"
    )
    export.add_argument("--batch-size", type=count, default=1)
    export.add_argument("--calibration-data", help="data set for int8 calibration and verification (presets: the one they were trained on)")
    export.add_argument("--micro", action="store_true", help="also micro/: TFLite Micro int8 files as C arrays, arenas measured")
    export.add_argument("--onnx", action="store_true", help="also write onnx/<signature>.onnx, verified in ONNX Runtime")
    export.add_argument("--aarch64", action="store_true", help="also run the .tflite files on an emulated Cortex-A72 (aezoo verify)")

    predict = add_command("predict", help="run a .tflite or .onnx artifact (no TensorFlow needed)")
    predict.add_argument("artifact", help="a .tflite file or onnx/<signature>.onnx file from 'aezoo export'")
    predict.add_argument("input", help="a .png or .npy file")
    predict.add_argument("-o", "--output", help="where to write the result (.png or .npy)")
    predict.add_argument("--signature", default="reconstruct", help="reconstruct, encode, decode or sample")
    predict.add_argument("--runtime", choices=("tflite", "micro"), default="tflite", help="micro: a micro/ file in TFLite Micro")
    predict.add_argument("--kernels", default="default", help=KERNELS_HELP)

    verify = add_command("verify", help="re-run an export's .tflite files on x86_64 or emulated aarch64 (no TensorFlow)")
    verify.add_argument("export_dirs", nargs="+", metavar="EXPORT_DIR", help="folders written by 'aezoo export'")
    verify.add_argument("--platform", choices=("x86_64", "aarch64"), default="aarch64")
    verify.add_argument("--cpu", type=_cpus, help="aarch64 only: comma list of cortex-a72 (Pi 4, the default), cortex-a76 (Pi 5)")
    verify.add_argument("--timing-runs", type=count_or_zero, default=0, help="time this many single-example reconstruct calls per file")
    verify.add_argument("--kernels", default="default", help=KERNELS_HELP)

    presets = add_command("presets", help="pretrained presets with their headline metric")
    presets.add_argument("--build", nargs="+", metavar="NAME", help="(maintainers) train presets and write their files")

    finetune = add_command("finetune", help="continue training a preset on new data")
    finetune.add_argument("preset")
    finetune.add_argument("--data", required=True)
    finetune.add_argument("--epochs", type=count, help="default: 5, or 2 with --quick")
    finetune.add_argument("--batch-size", type=count, default=128)
    finetune.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    finetune.add_argument("--quick", action="store_true", help="small data and few epochs")
    finetune.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                          help="data option (data.image_size=[28,28]), training option (train.learning_rate=3e-4) or params key")
    _add_training_flags(finetune)

    bench = add_command("benchmark", help="print a benchmark table (export, recipes or data)")
    bench.add_argument("suite", choices=["export", "recipes", "data"])
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _add_training_flags(sub):
    # Defaults of None: a flag left out leaves the value to `--set train.KEY` or the recipe (then TrainSettings').
    sub.add_argument("--precision", choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"], help="default: auto")
    sub.add_argument("--strategy", choices=["auto", "default", "mirrored", "multi_worker"], help="default: auto")
    sub.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    sub.add_argument("--seed", type=count_or_zero, help="default: 0")
    sub.add_argument("--out", default=None, help="run directory (default: runs/<name>)")


def _user_errors():
    """Exception types that are the user's to fix: printed as one line, exit code 2."""
    from export.runtime import EdgeError

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


def _import_tensorflow_quietly():
    """Imports TensorFlow with stderr closed at the file-descriptor level.

    TF 2.21 writes its start-up lines (absl's preamble, CUDA probing, CPU features) from C++
    straight to fd 2, some of them whatever TF_CPP_MIN_LOG_LEVEL says; they came before every
    one-line error. Python exceptions raised by the import still reach the user: they are
    printed after stderr is restored.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a bad command line (already reported in one line)
        return stop.code
    # What reproduces this run (recorded in config.json / metrics.json); --resume and --verbose do not change it.
    args.command_line = "aezoo " + shlex.join(a for a in argv if a not in ("--resume", "--verbose"))
    verbose = args.verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    if _needs_tensorflow(args) and not verbose:
        _import_tensorflow_quietly()
    try:
        if args.command == "predict":
            from export.runtime import predict_file

            print(predict_file(args.artifact, args.input, args.output, args.signature, args.runtime, args.kernels))
            return 0
        if args.command == "verify":
            from export.aarch64 import verify
            from export.runtime import EdgeError

            if args.cpu and args.platform != "aarch64":
                raise EdgeError(f"--cpu applies to --platform aarch64 only ({args.platform} runs natively); remove it")
            cpus = {"cpus": args.cpu} if args.cpu else {}
            reports = verify(args.export_dirs, args.platform, timing_runs=args.timing_runs, kernels=args.kernels, **cpus)
            print("\n\n".join(map(str, reports)))
            return 1 if any(report.missed for report in reports) else 0
        from recipes import commands

        return getattr(commands, args.command)(args) or 0
    except KeyboardInterrupt:
        print("aezoo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if isinstance(error, _user_errors()):
            print(f"aezoo: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
