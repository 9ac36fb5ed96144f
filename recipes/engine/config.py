"""Recipe configs: readable TOML files in this folder, overridden from the command line.

A config names its `task` (the module in recipes/ that runs it) and a `description`, and has
the sections [data], [model], [models.<name>] (options for that model only), [train] (a
`TrainSettings`), [params] (the task's own knobs) and [quick] (smaller data and fewer epochs
for `--quick`).
"""

import copy
import dataclasses

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
}


def load_recipe(name):
    path = RECIPES_DIR / f"{name}.toml"
    if not path.exists():
        raise unknown_name("recipe", name, list_recipes())
    config = tomllib.loads(path.read_text())
    config.setdefault("models", {})
    return config


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
        value = parse_value(text.strip())
        if section == "train":
            value = train_option(field, value)
        elif section == "params":
            defaults = config.get("params", {})
            if field not in defaults:
                raise unknown_name(f"params key of task {config['task']!r}", field, defaults)
            value = _check_bounds(key, _check_type(key, value, type(defaults[field])), *PARAM_BOUNDS.get(field, (None, None)))
        elif section == "data":
            value = data_option(field, value)
        elif section == "quick":
            if field not in QUICK_KEYS:
                raise unknown_name("quick key", field, QUICK_KEYS)
            value = _check_bounds(key, _check_type(key, value, QUICK_KEYS[field]), COUNT_MINIMUMS[key], None)
        elif section != "model":  # model options are checked by zoo.create against the chosen model
            raise unknown_name("config section", section, ["data", "model", "train", "params", "quick"])
        config.setdefault(section, {})[field] = value
    return config


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
