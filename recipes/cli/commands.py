"""The `aezoo` subcommands that need TensorFlow (everything but `predict`)."""

import argparse
import json
import sys
from pathlib import Path

# `aezoo list` counts parameters for MNIST-sized inputs and 16-number codes, except where a model needs
# other inputs or sizes its own code (a VQ-VAE: a grid of code vectors).
LIST_OPTIONS = {"lstm_ae": {"input_shape": (28, 28)}, "vq_vae": {"latent_dim": None}}


def list(args):  # noqa: A001  (the subcommand's name)
    import zoo

    print(f"{'model':<16}{'parameters':>12}  input (for the count)")
    for name in zoo.list_models():
        options = {"input_shape": (28, 28, 1), "latent_dim": 16, **LIST_OPTIONS.get(name, {})}
        model = zoo.create(name, **{key: value for key, value in options.items() if value is not None})
        print(f"{name:<16}{model.count_params():>12,}  {options['input_shape']}")


# --set keys that `aezoo train` / `aezoo finetune` take as flags with a default: refused as keys,
# since the flag's default would win unseen (or the key would, unrecorded).
FINETUNE_FLAGS = {"train.epochs": "--epochs", "train.batch_size": "--batch-size", "data.name": "--data"}
TRAIN_FLAGS = {**FINETUNE_FLAGS, "train.loss": "--loss", "train.precision": "--precision", "train.strategy": "--strategy",
               "train.seed": "--seed", "model.latent_dim": "--latent-dim"}


def _refuse_flag_key(key, value, flags):
    """A one-line error for `--set KEY=VALUE` where KEY is one of the command's `flags`."""
    from zoo.errors import ZooError

    if key in flags:
        raise ZooError(f"{key} has its own option here: use {flags[key]} {value}")


def _settings(args, **extra):
    """TrainSettings from `extra` and the --precision/--strategy/--seed flags that were given."""
    from recipes.engine.training import TrainSettings

    flags = {key: getattr(args, key) for key in ("precision", "strategy", "seed") if getattr(args, key) is not None}
    return TrainSettings(**flags, **extra)


def _as_model_input(name, config, data):
    """Single-channel images become (rows, columns) sequences for models that read (T, F)."""
    backbone = config.get("backbone")
    if (name == "lstm_ae" or backbone == "lstm") and data.x_train.ndim == 4:
        return data.as_sequences()
    return data


def train(args):
    import zoo
    from recipes.engine import checkpoints, distribution, training

    options, data_options, train_options = _train_set_options(args.set)
    zoo.registry.check_options(zoo.model_class(args.model), options)
    data = _as_model_input(args.model, options, zoo.data.load(args.data, **data_options))
    out = Path(args.out or Path("runs") / f"{args.model}-{Path(args.data).stem}")
    settings = _settings(args, epochs=args.epochs, batch_size=args.batch_size, loss=args.loss, **train_options)
    with distribution.worker_run_dir(out, settings.strategy, args.resume) as out:  # non-chief workers: a temporary folder
        resume = checkpoints.claim_run_dir(out, args.resume, marker="checkpoints")
        model, history = training.train(
            lambda: zoo.create(args.model, input_shape=data.input_shape, latent_dim=args.latent_dim, **options),
            data.x_train,
            settings=settings,
            run_dir=out,
            run_name=f"train/{args.model}",
            resume=resume,
        )
        test_mse, test_psnr_db = _test_errors(model, data.x_test)
        metrics = {
            "model": args.model,
            "data": args.data,
            "epochs": len(history),
            "test_mse": test_mse,
            "test_psnr_db": test_psnr_db,
            "parameters": int(model.count_params()),
            "train_seconds": checkpoints.train_seconds(out),
            "command": args.command_line,
        }
        checkpoints.atomic_write(out / "model.keras", model.save, checkpoints.resume_note(out))
        checkpoints.atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=1)))
        print(json.dumps({k: metrics[k] for k in ("test_mse", "test_psnr_db", "epochs")}), f"-> {out}")


def _train_set_options(assignments):
    """({model option: value}, {data option: value}, {train option: value}) of `aezoo train --set` assignments."""
    from recipes.engine.config import data_option, train_option

    options, data_options, train_options = {}, {}, {}
    for key, value in map(_assignment, assignments):
        section, dot, field = key.partition(".")
        if section == "data" and dot:
            data_options[field] = data_option(field, value)
            _refuse_flag_key(key, value, TRAIN_FLAGS)
        elif section == "train" and dot:
            train_options[field] = train_option(field, value)
            _refuse_flag_key(key, value, TRAIN_FLAGS)
        else:  # a model option, bare (filters=...) or as `aezoo run` spells it (model.filters=...)
            name = field if section == "model" and dot else key
            _refuse_flag_key(f"model.{name}", value, TRAIN_FLAGS)
            options[name] = value
    return options, data_options, train_options


def _test_errors(model, x_test):
    """(MSE per value, mean PSNR in dB or None where the data is not in [0, 1]) of `model` on x_test."""
    import numpy as np

    from recipes.engine.evaluation import batches, psnr

    # Summed batch by batch: streamed test images stay in their files.
    squared, psnr_sum, values, in_unit_range = 0.0, 0.0, 0, True
    for clean in batches(x_test):
        restored = np.asarray(model.predict_on_batch(clean), "float32")
        squared += float(((restored - clean).astype("float64") ** 2).sum())
        psnr_sum += psnr(clean, restored) * len(clean)
        values += clean.size
        in_unit_range = in_unit_range and clean.min() >= 0
    return squared / values, psnr_sum / len(x_test) if in_unit_range else None


def _assignment(text):
    from recipes.engine.config import parse_value
    from zoo.errors import ZooError

    key, sep, value = text.partition("=")
    if not sep:
        raise ZooError(f"--set takes KEY=VALUE (e.g. filters=[32,64]), got {text!r}")
    return key.strip(), parse_value(value.strip())


def run(args):
    if args.list or not args.recipe:
        from recipes.engine.catalog import list_recipes

        for name, description in list_recipes().items():
            print(f"{name:<12}{description}")
        return
    from recipes.engine.config import load_recipe
    from recipes.engine.run import run_recipe
    from zoo.errors import ZooError

    if args.labels and "label_fractions" not in load_recipe(args.recipe).get("params", {}):
        raise ZooError(f"--labels applies to the classify recipe, not {args.recipe}; remove it")
    options = dict(
        data=args.data,
        model=args.model,
        sets=args.set + ([f"params.label_fractions={args.labels}"] if args.labels else []),
        epochs=args.epochs,
        quick=args.quick,
    )
    if getattr(args, "dump_config", False):
        return _dump_config(args, options)
    run_dir, metrics = run_recipe(
        args.recipe,
        out=args.out,
        resume=args.resume,
        export=args.export,
        from_preset=args.from_preset,
        precision=args.precision,
        strategy=args.strategy,
        seed=args.seed,
        command=args.command_line,
        **options,
    )
    from zoo.presets import metrics_table

    print(metrics_table(metrics["metrics"]))
    print(f"report: {run_dir / 'report.md'}")


def _dump_config(args, options):
    """Prints the config `aezoo run` would train with these `options` and flags, as a config file."""
    from recipes.engine.config import dump_config
    from recipes.engine.run import resolve
    from zoo.errors import ZooError

    if args.from_preset:
        raise ZooError("--dump-config writes the config of a new model; --from-preset's weights are no config key: drop one")
    config = resolve(args.recipe, **options)
    config["train"].update({key: getattr(args, key) for key in ("precision", "strategy", "seed") if getattr(args, key) is not None})
    print(dump_config(config), end="")


def export(args):
    import zoo
    from export import export_model

    model, calibration = _load_source(args.source), args.calibration_data
    if calibration is None and Path(args.source).suffix != ".keras":
        calibration = zoo.presets.preset_info(args.source).get("dataset")  # the data it was trained on
    quantize = args.quantize or ("float32,int8" if calibration else "float32")
    if not args.quantize and not calibration and not args.micro:  # --micro without data is refused below
        print("aezoo: exporting float32 only; add --calibration-data NAME for int8", file=sys.stderr)
    report = export_model(
        model,
        args.out,
        quantize=[m.strip() for m in quantize.split(",") if m.strip()],
        batch_size=args.batch_size,
        calibration_data=calibration,
        micro_target=args.micro,
        onnx=args.onnx,
        phone=args.phone,
        card=None if Path(args.source).suffix == ".keras" else zoo.presets.resolve(args.source) / "README.md",
    )
    if args.aarch64:
        from export import aarch64

        [report.aarch64] = aarch64.verify(args.out, "aarch64", ("cortex-a72",))
    print(report)


def _load_source(source):
    """A .keras file or a preset handle (a shipped name, a preset folder, hf://owner/name) -> a zoo model."""
    import keras

    import zoo

    path = Path(source)
    if path.suffix == ".keras":
        if not path.exists():
            raise zoo.DataNotFoundError(f"model file {path} does not exist")
        try:
            return keras.models.load_model(path)
        except Exception as error:  # a truncated zip, a foreign file: one line, not a traceback
            raise zoo.ZooError(f"cannot load {path} as a Keras model ({type(error).__name__}); re-save it with model.save") from None
    if path.is_file():  # a file, but not a model: no preset would be found under its path either
        raise zoo.ZooError(f"{path} is not a .keras file; export takes a model saved with model.save (.keras) "
                           "or a preset name (see 'aezoo presets')")
    return zoo.presets.from_preset(source)


def presets(args):
    if args.build:
        from recipes.tools.build_presets import PRESETS, build, preset_tables

        for name in PRESETS if args.build == ["all"] else args.build:
            print(f"{name}: {build(name)['headline']}")
        preset_tables()
        return
    from recipes.engine.catalog import preset_cards

    for name, info in preset_cards().items():
        print(f"{name:<32}{info['model']:<16}{info['headline']}")


def finetune(args):
    from zoo.errors import ZooError

    for key, value in map(_assignment, args.set):
        _refuse_flag_key(key, value, FINETUNE_FLAGS)
        if key.startswith("model."):
            raise ZooError(f"{key}: preset {args.preset} brings its own model and options; to train another model use "
                           "aezoo train or aezoo run")
    run(
        argparse.Namespace(
            recipe="finetune",
            list=False,
            out=args.out,
            resume=args.resume,
            export=False,
            quick=args.quick,
            from_preset=args.preset,
            data=args.data,
            model=None,
            set=[f"train.batch_size={args.batch_size}", *(["params.freeze_encoder=true"] if args.freeze_encoder else []), *args.set],
            labels=None,
            epochs=args.epochs,
            precision=args.precision,
            strategy=args.strategy,
            seed=args.seed,
            command_line=args.command_line,
        )
    )


def benchmark(args):
    if args.suite == "export":
        from recipes.tools.export_benchmark import main
    elif args.suite == "data":
        from recipes.tools.data_benchmark import main
    elif args.suite == "models":
        from recipes.tools.models_benchmark import main
    else:
        from recipes.tools.benchmark import main
    return main(args.args)
