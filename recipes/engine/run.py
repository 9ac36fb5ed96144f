"""Runs a recipe: resolves its config, loads data, lets the task train and evaluate, writes the run folder.

A run folder holds config.json (the resolved config), model.keras, history.csv, metrics.json,
plots/*.png, report.md, checkpoints/ and logs/ (TensorBoard) per trained model, and export/
when asked.
"""

import dataclasses
import importlib
import json
import math
from pathlib import Path

import zoo
from recipes.engine import checkpoints, distribution, report, training
from recipes.engine import config as recipe_config
from zoo.errors import ZooError
from zoo.layers import auto_width

CONFIG_FILE = "config.json"
EXPORT_EXAMPLES = 2000


@dataclasses.dataclass
class RunContext:
    """What a task gets: its resolved config, where to write, and helpers to load data and train."""

    recipe: str
    config: dict
    run_dir: Path
    settings: training.TrainSettings
    resume: bool = False
    quick: bool = False
    from_preset: str | None = None
    model: object = None
    fitted_widths: dict = dataclasses.field(default_factory=dict)  # option -> (the recipe's, the one used)

    @property
    def params(self):
        return self.config.get("params", {})

    @property
    def model_name(self):
        return self.config["model"]["name"]

    def load_data(self, for_model=None, **defaults):
        """The configured data set (cut for --quick), as sequences when the model reads (T, F);
        `defaults` are loader options for keys the [data] section leaves out.

        A large image folder, .npy file or .csv series streams from its files (every task trains
        on streamed examples and scores them batch by batch or on a bounded subset); data for
        models that read sequences is loaded into memory.
        """
        data_config = {**defaults, **self.config["data"]}
        name = data_config.pop("name")
        data = zoo.data.load(name, **data_config)
        if self.quick:
            quick = self.config.get("quick", {})
            data = data.take(quick.get("train_examples"), quick.get("test_examples"))
        model_name = for_model or self.model_name
        if _reads_sequences(model_name, self.config) and data.x_train.ndim == 4:
            return data.as_sequences()
        return data

    def build_model(self, input_shape, **overrides):
        """A function building the configured model for `input_shape` (called inside train's scope);
        with --from-preset, the preset's pretrained model."""
        if self.from_preset:
            return lambda: zoo.presets.from_preset(self.from_preset)
        name, options = recipe_config.model_options(self.config)
        options.update(overrides)
        self._fit_recipe_widths(name, options, math.prod(input_shape))
        return lambda: zoo.create(name, input_shape=input_shape, **options)

    def _fit_recipe_widths(self, name, options, input_size):
        """Replaces, in `options`, the recipe's own hidden widths (set for 28x28 images) that do not lie
        between latent_dim and `input_size` with widths that do, recording each change in
        `fitted_widths`; widths the user set stay as given, for the model to check."""
        recipe_options = {k: v for k, v in self.config["models"].get(name, {}).items() if k not in self.config["model"]}
        latent_dim = options.get("latent_dim")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            return  # no code width to fit to: the model refuses a bad one in its own words

        def fitted(option, widths):
            widths_used = fit_widths(widths, input_size, latent_dim)
            if widths_used != widths:
                self.fitted_widths[option] = (widths, widths_used)
            return widths_used

        if "hidden_units" in recipe_options:
            options["hidden_units"] = fitted("model.hidden_units", options["hidden_units"])
        backbone = recipe_options.get("backbone_config")
        if isinstance(backbone, dict) and "hidden_units" in backbone:
            options["backbone_config"] = {
                **backbone, "hidden_units": fitted("model.backbone_config.hidden_units", backbone["hidden_units"])
            }

    def train(self, build_model, x, y=None, tag="model", settings=None, **kwargs):
        """training.train in run_dir/<tag>/ (its own checkpoints, so --resume continues every model)."""
        return training.train(
            build_model,
            x,
            y,
            settings=settings or self.settings,
            run_dir=self.run_dir / tag,
            run_name=f"{self.recipe}/{tag}",
            resume=self.resume and (self.run_dir / tag / "checkpoints" / checkpoints.STATE_FILE).exists(),
            **kwargs,
        )


def _check_resumable(config_path, recipe, config):
    """Refuses to resume a folder without a run, of another recipe, or with other settings."""
    run_dir = config_path.parent
    if not config_path.exists():
        raise ZooError(f"nothing to resume in {run_dir} (no {CONFIG_FILE}); run without --resume")
    saved = json.loads(config_path.read_text())
    if saved.get("recipe") != recipe:
        raise ZooError(f"{run_dir} holds a {saved.get('recipe')!r} run, not {recipe!r}; choose another --out")
    changed = checkpoints.config_changes(saved["config"], config)
    if changed:  # resuming would silently train the folder's settings, not the ones asked for
        raise ZooError(
            f"{run_dir} holds a run with other settings ({changed}); resume it with the command in "
            f"{config_path} or choose another --out"
        )


def _summary(recipe, command, config, model, data, precision, run_dir):
    """What metrics.json says of the run besides its metrics."""
    summary = {
        "recipe": recipe,
        "description": config["description"],
        "command": command,
        "data": config["data"]["name"],
        "model": config["model"]["name"],
        "parameters": int(model.count_params()),
        "train_examples": len(data.x_train),
        "test_examples": len(data.x_test),
        "precision": precision,
        "train_seconds": checkpoints.train_seconds(run_dir),  # every model, all resumes
    }
    if data.info.get("columns"):  # a series' value columns
        summary["columns"] = list(data.info["columns"])
    return summary


def _record_fitted_widths(fitted_widths, data, summary, results):
    """The recipe widths that were fitted to the input size, in metrics.json and as a report note."""
    if not fitted_widths:
        return
    summary["fitted_widths"] = {option: {"recipe": recipe_width, "used": used}
                                for option, (recipe_width, used) in fitted_widths.items()}
    results.notes.append(
        f"the recipe's widths fitted to the input size {math.prod(data.input_shape)} and latent_dim: "
        + ", ".join(f"{option}={used} (recipe: {recipe_width})" for option, (recipe_width, used) in fitted_widths.items())
        + "; set them with --set to choose others"
    )


def fit_widths(widths, input_size, latent_dim):
    """`widths` (a width or a list) if each lies strictly between `latent_dim` and `input_size`; else as
    many widths spread geometrically between the two, as the models choose by default (K > N > M)."""
    listed = widths if isinstance(widths, list) else [widths]
    if all(latent_dim < width < input_size for width in listed):
        return widths
    fitted = [auto_width(input_size, latent_dim, (i + 1) / (len(listed) + 1)) for i in range(len(listed))]
    return fitted if isinstance(widths, list) else fitted[0]


def _reads_sequences(model_name, config):
    if model_name == "lstm_ae":
        return True
    return model_name == "vae" and config["model"].get("backbone", config["models"].get("vae", {}).get("backbone")) == "lstm"


def resolve(recipe, *, data=None, model=None, sets=(), epochs=None, quick=False):
    """The config of a recipe or config file after --data/--model/--set/--epochs/--quick, validated."""
    config = recipe_config.load_recipe(recipe)
    quick_keys = [key for key, _, _ in (s.partition("=") for s in sets) if key.strip().startswith("quick.")]
    if quick_keys and not quick:  # they would be ignored: the run would train the full recipe
        raise ZooError(f"--set {quick_keys[0].strip()} applies to --quick runs only; add --quick, or set train.epochs / --epochs for a full run")
    if data:
        config["data"] = {"name": data}
    if model:
        config["model"] = {"name": model, "latent_dim": config["model"].get("latent_dim", 16)}
    config = recipe_config.apply_overrides(config, sets)
    if quick:
        config["train"]["epochs"] = config.get("quick", {}).get("epochs", 2)
    if epochs is not None:
        config["train"]["epochs"] = epochs
    zoo.model_class(config["model"]["name"])  # unknown model names fail before any work
    return config


def _preset_model(preset, model, sets):
    """The preset's model name; a ZooError if --model or --set model.KEY asks for another model or options."""
    name = zoo.presets.preset_info(preset)["model"]
    asked = [f"--set {key}" for key, _, _ in (s.partition("=") for s in sets) if key.strip().startswith("model.")]
    if model not in (None, name):
        asked.insert(0, f"--model {model}")
    if asked:
        raise ZooError(
            f"{asked[0]} does not apply with --from-preset: preset {preset} brings its own model ({name}) and options; "
            "remove it, or leave out --from-preset to train a new model"
        )
    return name


def run_recipe(recipe, *, out=None, resume=False, export=False, quick=False, from_preset=None, command=None, **options):
    """Runs `recipe` (a recipe name or a config file, FILE.toml) end to end into `out` (default
    runs/<recipe>, for a file runs/<its name>) and returns (run_dir, metrics dict).

    Keyword options: data, model, sets (list of "section.key=value"), epochs, precision,
    strategy, seed, verbose; `from_preset` starts from a pretrained preset's weights.
    `command` is what the run records as reproducing it (the CLI passes its command line).

    Example:
        >>> run_dir, metrics = run_recipe("denoise", quick=True, out="runs/denoise-quick")
    """
    if command is None:  # called from Python: record the call itself
        arguments = {"out": out, "export": export, "quick": quick, "from_preset": from_preset, **options}
        command = f"run_recipe({recipe!r}, " + ", ".join(f"{k}={v!r}" for k, v in arguments.items() if v) + ")"
    train_overrides = {k: options.pop(k, None) for k in ("precision", "strategy", "seed", "verbose")}
    if from_preset:  # the preset decides the model; its config travels with its weights
        options["model"] = _preset_model(from_preset, options.get("model"), options.get("sets", ()))
    config = resolve(recipe, quick=quick, **options)
    run_dir = Path(out or Path("runs") / recipe_config.config_name(recipe))
    strategy = recipe_config.train_settings(config, **train_overrides).strategy
    with distribution.worker_run_dir(run_dir, strategy, resume) as run_dir:  # non-chief workers: a temporary folder
        config_path = run_dir / CONFIG_FILE
        resume = checkpoints.claim_run_dir(run_dir, resume, marker=CONFIG_FILE)
        if resume:
            _check_resumable(config_path, recipe, config)
        settings = recipe_config.train_settings(config, **train_overrides)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.atomic_write(
            config_path,
            lambda p: Path(p).write_text(json.dumps({"recipe": recipe, "command": command, "config": config}, indent=1)),
        )
        task = importlib.import_module(f"recipes.tasks.{config['task']}")
        context = RunContext(recipe_config.config_name(recipe), config, run_dir, settings, resume=resume, quick=quick,
                             from_preset=from_preset)
        with distribution.precision_policy(settings.precision) as precision:
            results, data = task.run(context)
        model = context.model
        checkpoints.atomic_write(run_dir / "model.keras", model.save, checkpoints.resume_note(run_dir))
        summary = _summary(recipe, command, config, model, data, precision, run_dir)
        _record_fitted_widths(context.fitted_widths, data, summary, results)
        if export:
            from export import export_model

            # Export calibrates and verifies on a few thousand examples: those of streamed data are loaded.
            calibration = data.take(EXPORT_EXAMPLES, EXPORT_EXAMPLES).in_memory() if data.streaming else data
            report_text = str(export_model(model, run_dir / "export", calibration_data=calibration))
            results.sections.append(("Edge export (export/)", f"```\n{report_text}\n```"))
        report.write_outputs(run_dir, summary, results)
        return run_dir, json.loads((run_dir / "metrics.json").read_text())
