"""`aezoo`: the command line. Imports are lazy so `aezoo predict` runs where TensorFlow is absent."""

import argparse
import os
import shlex
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="aezoo", description="Keras autoencoder zoo: train, run recipes, export, predict.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="models with parameter counts for a default config")

    train = commands.add_parser("train", help="train one model on one data set")
    train.add_argument("model", help="model name (see 'aezoo list')")
    train.add_argument("--data", default="mnist5k", help="data set name or path (default: mnist5k)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--latent-dim", type=int, default=16)
    train.add_argument("--loss", default="bce", help="reconstruction loss: bce or mse (plain autoencoders)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. filters=[32,64]")
    _add_training_flags(train)

    run = commands.add_parser("run", help="run a recipe (see 'aezoo run --list')")
    run.add_argument("recipe", nargs="?", help="recipe name")
    run.add_argument("--list", action="store_true", help="list the recipes")
    run.add_argument("--data", help="data set name or path")
    run.add_argument("--model", help="model name")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    run.add_argument("--epochs", type=int)
    run.add_argument("--quick", action="store_true", help="small data and few epochs (tests, smoke runs)")
    run.add_argument("--export", action="store_true", help="also export edge artifacts into OUT/export")
    run.add_argument("--from-preset", help="start from a pretrained preset's weights")
    run.add_argument("--labels", help="classify: label fractions, e.g. 1%%,10%%,100%%")
    _add_training_flags(run)

    export = commands.add_parser("export", help="SavedModel + TFLite artifacts, verified against Keras")
    export.add_argument("source", help="a .keras file or a preset name")
    export.add_argument("--out", required=True)
    export.add_argument(
        "--quantize", help="comma list of float32,float16,dynamic,int8 (default: float32, and int8 with calibration data)"
    )
    export.add_argument("--batch-size", type=int, default=1)
    export.add_argument("--calibration-data", help="data set for int8 calibration and verification (presets: fashion_mnist)")
    export.add_argument("--onnx", action="store_true", help="also write onnx/<signature>.onnx, verified in ONNX Runtime")

    predict = commands.add_parser("predict", help="run a .tflite or .onnx artifact (no TensorFlow needed)")
    predict.add_argument("artifact", help="a .tflite file or onnx/<signature>.onnx file from 'aezoo export'")
    predict.add_argument("input", help="a .png or .npy file")
    predict.add_argument("-o", "--output", help="where to write the result (.png or .npy)")
    predict.add_argument("--signature", default="reconstruct", help="reconstruct, encode, decode or sample")

    presets = commands.add_parser("presets", help="pretrained presets with their headline metric")
    presets.add_argument("--build", nargs="+", metavar="NAME", help="(maintainers) train presets and write their files")

    finetune = commands.add_parser("finetune", help="continue training a preset on new data")
    finetune.add_argument("preset")
    finetune.add_argument("--data", required=True)
    finetune.add_argument("--epochs", type=int, default=5)
    finetune.add_argument("--batch-size", type=int, default=128)
    finetune.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    finetune.add_argument("--quick", action="store_true", help="small data and few epochs")
    _add_training_flags(finetune)

    bench = commands.add_parser("benchmark", help="print a benchmark table (export or recipes)")
    bench.add_argument("suite", choices=["export", "recipes"])
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _add_training_flags(sub):
    sub.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"])
    sub.add_argument("--strategy", default="auto", choices=["auto", "default", "mirrored", "multi_worker"])
    sub.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--out", default=None, help="run directory (default: runs/<name>)")


def _user_errors():
    """Exception types that are the user's to fix: printed as one line, exit code 2."""
    from export.runtime import EdgeError

    types = [EdgeError]
    if "zoo.errors" in sys.modules:  # only loaded with TensorFlow; no ZooError can exist otherwise
        types.append(sys.modules["zoo.errors"].ZooError)
    return tuple(types)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    # What reproduces this run (recorded in config.json / metrics.json); --resume only continues it.
    args.command_line = "aezoo " + shlex.join(a for a in argv if a != "--resume")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide C++ start-up noise (no GPU found, ...)
    try:
        if args.command == "predict":
            from export.runtime import predict_file

            print(predict_file(args.artifact, args.input, args.output, args.signature))
            return 0
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
