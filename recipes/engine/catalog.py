"""What the package ships (recipes, preset cards), read without importing TensorFlow.

`aezoo run --list` and `aezoo presets` answer from here in well under a second. The zoo
package itself cannot be imported for this: its `__init__` imports Keras, because its models
must be registered before `keras.models.load_model` meets them. So the preset cards are found
through the package's location instead.
"""

import importlib.util
import json
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RECIPES_DIR = Path(__file__).parents[1] / "tasks"


def list_recipes():
    """{name: description} for every recipe config shipped in `recipes/`."""
    return {p.stem: tomllib.loads(p.read_text())["description"] for p in sorted(RECIPES_DIR.glob("*.toml"))}


def preset_cards():
    """{name: metadata plus model name} for every preset folder shipped in zoo/presets/ (`zoo.list_presets()`)."""
    presets_dir = Path(importlib.util.find_spec("zoo").submodule_search_locations[0]) / "presets"
    return {p.parent.name: {**json.loads((p.parent / "metadata.json").read_text()), "model": json.loads(p.read_text())["model"]}
            for p in sorted(presets_dir.glob("*/config.json"))}
