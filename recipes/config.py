"""Recipe configs: readable TOML files in this folder, overridden from the command line.

A config names its `task` (the module in recipes/ that runs it) and a `description`, and has
the sections [data], [model], [models.<name>] (options for that model only), [train] (a
`TrainSettings`), [params] (the task's own knobs) and [quick] (smaller data and fewer epochs
for `--quick`).
"""

import copy
import dataclasses

from recipes.catalog import RECIPES_DIR, list_recipes, tomllib
from recipes.training import TrainSettings
from zoo.errors import ZooError, unknown_name

DATA_KEYS = {
    "name": str, "path": str, "window": int, "stride": int, "label_column": str,
    "image_size": list, "color_mode": str, "stream": bool, "image_key": str, "label_key": str, "data_dir": str,
}
QUICK_KEYS = {"epochs": int, "train_examples": int, "test_examples": int}


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
            value = _check_type(key, value, type(defaults[field]))
        elif section == "data":
            value = data_option(field, value)
        elif section == "quick":
            if field not in QUICK_KEYS:
                raise unknown_name("quick key", field, QUICK_KEYS)
            value = _check_type(key, value, QUICK_KEYS[field])
        elif section != "model":  # model options are checked by zoo.create against the chosen model
            raise unknown_name("config section", section, ["data", "model", "train", "params", "quick"])
        config.setdefault(section, {})[field] = value
    return config


def train_option(key, value):
    """A `train.KEY` value checked against TrainSettings' fields (unknown keys and wrong types refused)."""
    fields = {f.name: type(f.default) for f in dataclasses.fields(TrainSettings)}
    if key not in fields:
        raise unknown_name("train key", key, fields)
    return _check_type(f"train.{key}", value, fields[key])


def data_option(key, value):
    """A `data.KEY` value checked against DATA_KEYS (unknown keys and wrong types refused)."""
    if key not in DATA_KEYS:
        raise unknown_name("data key", key, DATA_KEYS)
    return _check_type(f"data.{key}", value, DATA_KEYS[key])


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
