"""Recipe configs: readable TOML files in this folder, overridden from the command line.

A config names its `task` (the module in recipes/ that runs it) and a `description`, and has
the sections [data], [model], [models.<name>] (options for that model only), [train] (a
`TrainSettings`), [params] (the task's own knobs) and [quick] (smaller data and fewer epochs
for `--quick`).

A config file (`aezoo run FILE.toml`) has the same format: its `task` picks the recipe whose
[train], [params] and [quick] keys it starts from, and its own sections replace [data], [model]
and [models] and override those keys. `aezoo run ... --dump-config` writes any command line's
resolved config as such a file.
"""

import copy
import dataclasses
from pathlib import Path

import tomli_w

from recipes.engine.catalog import RECIPES_DIR, list_recipes, tomllib
from recipes.engine.training import TrainSettings
from zoo.errors import ZooError, unknown_name

DATA_KEYS = {
    "name": str, "path": str, "window": int, "stride": int, "label_column": str,
    "image_size": list, "color_mode": str, "stream": bool, "image_key": str, "label_key": str, "data_dir": str,
}
QUICK_KEYS = {"epochs": int, "train_examples": int, "test_examples": int}
# Inclusive lower bounds of the counts in [data] and [quick]: a negative count would slice the data
# (quick.train_examples=-5 trains on all but 5 examples) instead of failing.
COUNT_MINIMUMS = {
    "data.window": 1, "data.stride": 1, "data.image_size": 1,
    "quick.epochs": 1, "quick.train_examples": 1, "quick.test_examples": 1,
}
# Inclusive bounds of numeric [params] keys (None: unbounded), checked before anything trains: out of
# them a recipe would fail after training, in NumPy, scikit-learn or SciPy, or score nothing.
PARAM_BOUNDS = {
    "eval_examples": (1, None), "map_examples": (1, None), "neighbours": (1, None), "importance_samples": (1, None),
    "quality_samples": (2, None), "label_draws": (1, None), "classifier_epochs": (1, None), "min_pass_examples": (1, None),
    "pseudo_labels_per_class": (0, None), "pseudo_label_epochs": (1, None), "pseudo_label_rounds": (1, None),
    "sigma": (0, None), "extra_sigmas": (0, None), "salt_pepper": (0, 1), "min_fraction": (0, 1), "max_fraction": (0, 1),
    "threshold_percentile": (0, 100), "binarization_seed": (0, None), "classifier_learning_rate": (0, None),
    "augment_shift": (0, None), "label_fractions": (0, 1),  # classify checks more: shift < image side, fractions > 0
    "jpeg_qualities": (0, 100), "webp_qualities": (0, 100), "pca_components": (1, None),
}


SECTIONS = ("task", "description", "data", "model", "models", "train", "params", "quick")
# Sections a config file gives in full; the others' keys override the task's recipe one by one.
REPLACED_SECTIONS = ("description", "data", "model", "models")


def load_recipe(name):
    """The config of recipe `name`, or of a config file when `name` ends in .toml."""
    if name.endswith(".toml"):
        return load_config_file(name)
    path = RECIPES_DIR / f"{name}.toml"
    if not path.exists():
        raise unknown_name("recipe", name, list_recipes())
    config = tomllib.loads(path.read_text())
    config.setdefault("models", {})
    return config


def config_name(recipe):
    """What a run of `recipe` is called (its default folder is runs/NAME): a recipe's name, or a config
    file's name without .toml; a train.toml is named after its folder (a preset's)."""
    if not recipe.endswith(".toml"):
        return recipe
    path = Path(recipe)
    return path.parent.name if path.stem == "train" and path.parent.name else path.stem


def task_names():
    """The tasks a config's `task` may name: those of the shipped recipes (each has a recipe of its name)."""
    return sorted({tomllib.loads(p.read_text())["task"] for p in RECIPES_DIR.glob("*.toml")})


def load_config_file(path):
    """A run config file, checked, over the defaults of its task's recipe (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"config file {path} does not exist; give a recipe name (aezoo run --list) or a .toml file")
    try:
        given = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ZooError(f"{path} is not a TOML file ({error}); see aezoo run RECIPE --dump-config for one") from None
    for section in given:
        if section not in SECTIONS:
            raise unknown_name(f"section of {path}", section, SECTIONS)
    if given.get("task") not in task_names():
        raise unknown_name(f"task in {path}", given.get("task"), task_names())
    config = load_recipe(given["task"])
    for section in REPLACED_SECTIONS:
        if section in given:
            config[section] = given[section] if section in ("description", "models") else {}
    if not all(isinstance(options, dict) for options in config["models"].values()):
        raise ZooError(f"{path}: [models] holds one [models.MODEL] section of options per model")
    for section in ("data", "model", "train", "params", "quick"):
        if not isinstance(given.get(section, {}), dict):
            raise ZooError(f"{path}: {section} must be a [{section}] section of KEY = VALUE lines")
        for key, value in given.get(section, {}).items():
            try:
                config.setdefault(section, {})[key] = checked_value(config, section, key, value)
            except ZooError as error:
                raise ZooError(f"{path}: {error}") from None
    for section, example in (("data", "a data set name or path"), ("model", "a model (aezoo list)")):
        if "name" not in config.get(section, {}):
            raise ZooError(f"{path}: [{section}] needs name = {example}")
    return config


def dump_config(config):
    """`config` as the text of a config file, every key resolved: [model] holds the chosen model's
    options ([models.<name>] folded in), since [models] options of other models change nothing."""
    name, options = model_options(config)
    resolved = {**{key: config[key] for key in SECTIONS if key in config}, "model": {"name": name, **options}}
    resolved.pop("models", None)
    return tomli_w.dumps(resolved)


def parse_value(text):
    """A --set value as TOML (numbers, booleans, [lists], "strings"); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check_type(key, value, expected):
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is not None and not isinstance(value, expected) or isinstance(value, bool) and expected is not bool:
        raise ZooError(f"{key} must be {expected.__name__}, got {value!r}")
    return value


def _check_bounds(key, value, low, high):
    """`value` (a number or a list of numbers) if each lies in [low, high]; a ZooError naming `key` otherwise."""
    for number in value if isinstance(value, list) else [value]:
        if (low is not None and number < low) or (high is not None and number > high):
            raise ZooError(f"{key} must be {f'>= {low}' if high is None else f'in [{low}, {high}]'}, got {value}")
    return value


def apply_overrides(config, assignments):
    """Applies `section.key=value` strings; refuses unknown sections, keys and wrong value types."""
    config = copy.deepcopy(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or not field:
            raise ZooError(f"--set takes SECTION.KEY=VALUE (e.g. train.epochs=5), got {assignment!r}")
        config.setdefault(section, {})[field] = checked_value(config, section, field, parse_value(text.strip()))
    return config


def checked_value(config, section, field, value):
    """`value` for `section.field` of `config`, checked; unknown sections and keys and wrong types refused."""
    key = f"{section}.{field}"
    if section == "train":
        return train_option(field, value)
    if section == "params":
        defaults = config.get("params", {})
        if field not in defaults:
            raise unknown_name(f"params key of task {config['task']!r}", field, defaults)
        return _check_bounds(key, _check_type(key, value, type(defaults[field])), *PARAM_BOUNDS.get(field, (None, None)))
    if section == "data":
        return data_option(field, value)
    if section == "quick":
        if field not in QUICK_KEYS:
            raise unknown_name("quick key", field, QUICK_KEYS)
        return _check_bounds(key, _check_type(key, value, QUICK_KEYS[field]), COUNT_MINIMUMS[key], None)
    if section != "model":  # model options are checked by zoo.create against the chosen model
        raise unknown_name("config section", section, ["data", "model", "train", "params", "quick"])
    return value


def train_option(key, value):
    """A `train.KEY` value checked against TrainSettings' fields (unknown keys, wrong types and values
    TrainSettings refuses, such as a negative count, are refused)."""
    fields = {f.name: type(f.default) for f in dataclasses.fields(TrainSettings)}
    if key not in fields:
        raise unknown_name("train key", key, fields)
    value = _check_type(f"train.{key}", value, fields[key])
    TrainSettings(**{key: value})  # checked alone too: --quick replaces train.epochs, which would hide it
    return value


def data_option(key, value):
    """A `data.KEY` value checked against DATA_KEYS and COUNT_MINIMUMS (unknown keys, wrong types and
    counts below their minimum refused)."""
    if key not in DATA_KEYS:
        raise unknown_name("data key", key, DATA_KEYS)
    value = _check_type(f"data.{key}", value, DATA_KEYS[key])
    if f"data.{key}" in COUNT_MINIMUMS:
        _check_bounds(f"data.{key}", value, COUNT_MINIMUMS[f"data.{key}"], None)
    return value


def model_options(config):
    """zoo.create keyword arguments: the chosen model's [models.<name>] options, then [model] keys."""
    model = dict(config["model"])
    name = model.pop("name")
    return name, {**config["models"].get(name, {}), **model}


def train_settings(config, **overrides):
    """The [train] section (plus command-line overrides that are not None) as TrainSettings."""
    values = {**config.get("train", {}), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return TrainSettings(**values)
    except TypeError as error:
        raise ZooError(f"bad [train] section: {error}") from None
