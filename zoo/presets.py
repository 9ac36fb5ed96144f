"""Presets (keras-hub style): a model a user can make, share and reproduce, as one folder.

A preset folder holds `config.json` (the registered model name and its `zoo.create` options,
nothing else), `metadata.json` (parameters, versions, date, the weights' sha256, the data it
was trained on, metrics with the command that measured them), `model.weights.h5`, `README.md`
(the card, with Hugging Face model-card front matter) and, when it was made by a recipe run,
`train.toml` (that run's config). A handle names one: a preset shipped in `zoo/presets/`, a
local folder, or `hf://owner/name[@revision]` on the Hugging Face Hub. Loading reads JSON and
weights only: no code from a preset ever runs.
"""

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from zoo.errors import ZooError, unknown_name
from zoo.registry import check_options, list_models, model_class

PRESETS_DIR = Path(__file__).parent / "presets"
CHECK_SLICE = PRESETS_DIR / "fashion_mnist_check.npz"
CONFIG, METADATA, WEIGHTS, CARD, TRAIN_CONFIG = "config.json", "metadata.json", "model.weights.h5", "README.md", "train.toml"
REQUIRED_FILES = (CONFIG, METADATA, WEIGHTS, CARD)
CONFIG_KEYS = {"model", "options"}
HF_PREFIX = "hf://"
# A fine-tuning run folder keeps its run files at the top and its preset here.
RUN_PRESET = "preset"


def list_presets(family=None, task=None):
    """Names of the presets shipped with the package, sorted (timm's `list_models(pretrained=True)`).

    Args:
        family: keep those of this registered model, e.g. "conv_ae" or "vae".
        task: keep those made by this recipe task, e.g. "denoise" or "anomaly".

    Example:
        >>> zoo.list_presets(family="conv_ae", task="denoise")  # ['conv_ae_denoise_fashion_mnist']
    """
    if family is not None and family not in list_models():
        raise unknown_name("model family", family, list_models())
    names = sorted(p.parent.name for p in PRESETS_DIR.glob(f"*/{CONFIG}"))
    cards = {name: preset_info(name) for name in names}
    return [name for name, card in cards.items()
            if family in (None, card["model"]) and task in (None, card.get("task"))]


def preset_info(handle):
    """The preset's card as one dict: its metadata plus `model` and `config` (the `zoo.create` options)."""
    folder = resolve(handle)
    config = read_config(folder, handle)
    return {**read_json(folder, METADATA, handle), "model": config["model"], "config": config["options"]}



def resolve(handle):
    """The local folder of a preset handle: a shipped name, a folder, or `hf://owner/name[@revision]`."""
    handle = str(handle)
    if handle.startswith(HF_PREFIX):
        return download(handle)
    if (PRESETS_DIR / handle / CONFIG).exists() and os.sep not in handle:
        return PRESETS_DIR / handle
    folder = Path(handle)
    if folder.is_dir():  # a run folder (it has a config.json of its own) holds its preset in RUN_PRESET
        return folder / RUN_PRESET if (folder / RUN_PRESET / CONFIG).exists() else folder
    shipped = sorted(p.parent.name for p in PRESETS_DIR.glob(f"*/{CONFIG}"))
    raise ZooError(f"unknown preset {handle!r}: not a folder, an hf://owner/name handle or a shipped preset "
                   f"({', '.join(shipped)})")


def download(handle):
    """Fetches `hf://owner/name[@revision]` into (or finds it in) the Hugging Face cache; offline
    with HF_HUB_OFFLINE=1. The weights' sha256 is checked by `from_preset` like any preset's."""
    import huggingface_hub
    from huggingface_hub import errors

    repo_id, _, revision = handle[len(HF_PREFIX):].partition("@")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision or None))
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError):
        raise ZooError(f"{handle} was not found on the Hugging Face Hub; check the owner/name and revision "
                       "(or log in with `hf auth login` for a private repo)") from None
    except errors.LocalEntryNotFoundError:
        raise ZooError(f"{handle} is not in the Hugging Face cache and the Hub cannot be reached; download it "
                       "once with HF_HUB_OFFLINE unset, or point HF_HUB_CACHE at a cache holding it") from None
    except errors.HFValidationError as error:
        raise ZooError(f"{handle} is not a valid Hugging Face handle ({str(error).splitlines()[0][:120]}); "
                       "write hf://owner/name or hf://owner/name@revision") from None


def read_json(folder, file, handle):
    path = Path(folder) / file
    if not path.exists():
        raise ZooError(f"preset {handle}: {file} is missing from {folder}; a preset folder holds "
                       f"{', '.join(REQUIRED_FILES)} (write one with model.save_to_preset)")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ZooError(f"preset {handle}: {file} is not valid JSON ({error}); rewrite it with model.save_to_preset") from None


def read_config(folder, handle):
    """config.json checked: only `model` and `options`, a registered model, options it takes."""
    config = read_json(folder, CONFIG, handle)
    unknown = sorted(set(config) - CONFIG_KEYS) if isinstance(config, dict) else ["(not an object)"]
    if unknown or not CONFIG_KEYS <= set(config):
        raise ZooError(f"preset {handle}: {CONFIG} must hold exactly the keys {sorted(CONFIG_KEYS)}, not "
                       f"{sorted(config) if isinstance(config, dict) else config!r}; remove the others "
                       "(metrics and notes belong in metadata.json)")
    try:
        check_options(model_class(config["model"]), config["options"])
    except ZooError as error:
        raise ZooError(f"preset {handle}: {CONFIG}: {error}") from None
    return config


def sha256(path):
    """Hex sha256 of a weights file (a few MB: read whole)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def from_preset(handle, family=None, **overrides):
    """Builds the preset's model and loads its verified weights (JSON and weights only; no code runs).

    Args:
        handle: a name from `list_presets()`, a preset folder, or `hf://owner/name[@revision]`.
        family: a model class the preset must be (or derive from); `ConvAutoencoder.from_preset` passes itself.
        overrides: config keys to change that keep the architecture, e.g. `dtype="mixed_float16"`
            for mixed-precision fine-tuning, or a VAE's `beta`.

    Example:
        >>> model = zoo.from_preset("conv_ae_fashion_mnist")          # or "./my_preset", "hf://me/my_preset"
        >>> model.compile("adam", loss=zoo.losses.bce); model.fit(x, x, epochs=2)  # fine-tune
    """
    folder = resolve(handle)
    config = read_config(folder, handle)
    cls = model_class(config["model"])
    if family is not None and not issubclass(cls, family):
        raise ZooError(f"preset {handle} is a {config['model']} ({cls.__name__}), not a {family.__name__}; "
                       f"load it with zoo.from_preset({str(handle)!r}) or {cls.__name__}.from_preset")
    weights = folder / WEIGHTS
    expected = read_json(folder, METADATA, handle).get("sha256")
    if not weights.exists():
        raise ZooError(f"preset {handle}: {WEIGHTS} is missing from {folder}; download or copy the preset again")
    if sha256(weights) != expected:
        raise ZooError(f"preset {handle}: {WEIGHTS} does not match the sha256 in {METADATA} (tampered or truncated); "
                       "download or copy the preset again")
    model = cls(**{**config["options"], **overrides})
    try:
        with warnings.catch_warnings():
            # Keras only warns when a layer finds no weights and keeps its random ones: refuse that too
            warnings.simplefilter("error", UserWarning)
            model.load_weights(weights)
    except (ValueError, UserWarning) as error:
        raise ZooError(
            f"preset {handle}: overrides {sorted(overrides)} change the architecture, so the weights do not fit "
            f"({str(error).splitlines()[0][:120]})"
        ) from None
    return model


def architecture_options(handle):
    """The `zoo.create` keyword options of a preset's model, e.g. to build the same architecture untrained."""
    return dict(preset_info(handle)["config"])


def model_options(model):
    """A model's `zoo.create` options: its config without Keras' layer bookkeeping, in float32
    (a preset loads in float32; fine-tune it in any policy)."""
    return {**{k: v for k, v in model.get_config().items() if k not in ("name", "trainable")}, "dtype": "float32"}


def save_preset(model, folder, metadata=None, run_config=None, sections=(), overwrite=False):
    """Writes `model` as a preset folder (see `PresetMixin.save_to_preset`), with `sections` (markdown
    lines) added to its card after the metrics; returns its metadata."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise ZooError(f"{folder} already exists; choose another folder or pass overwrite=True to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_weights(staging / WEIGHTS)
        info = {**describe(model, staging / WEIGHTS), **(metadata or {})}
        (staging / CONFIG).write_text(json.dumps({"model": model.registry_name, "options": model_options(model)}, indent=1))
        (staging / METADATA).write_text(json.dumps(info, indent=1))
        # A run's preset loads by the run folder's name (see `resolve`): the card names that.
        name = folder.parent.name if folder.name == RUN_PRESET else folder.name
        (staging / CARD).write_text(card_text(name, {**info, "model": model.registry_name}, sections))
        if run_config is not None:
            (staging / TRAIN_CONFIG).write_text(run_config)
        if folder.exists():  # replaced only once the new folder is complete
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def describe(model, weights):
    """The metadata every preset records about its own making."""
    import keras
    import tensorflow as tf

    from importlib.metadata import PackageNotFoundError, version

    try:
        zoo_version = version("autoencoder-zoo")
    except PackageNotFoundError:  # run from a checkout
        zoo_version = "source"
    return {
        "parameters": int(model.count_params()),
        "size_bytes": Path(weights).stat().st_size,
        "sha256": sha256(weights),
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "autoencoder-zoo": zoo_version},
        "date": datetime.date.today().isoformat(),
    }


def card_text(name, info, sections=()):
    """README.md: Hugging Face model-card front matter, then the card."""
    dataset = info.get("dataset")
    front = [
        "---",
        "library_name: keras",
        "license: apache-2.0",
        "tags:",
        *(f"- {tag}" for tag in ("autoencoder-zoo", "autoencoder", info["model"], info.get("task")) if tag),
        *(["datasets:", f"- {dataset}"] if dataset else []),
        *(["metrics:", *(f"- {metric}" for metric in info.get("metrics", {}))] if info.get("metrics") else []),
        "---",
        "",
    ]
    return "\n".join(front) + card(name, info, sections)


def card(name, info, sections=()):
    """The card's body: what it is, how it was made, how good it is, how to check it."""
    description = info.get("description")
    parent = info.get("parent")
    return "\n".join([
        f"# {name}",
        "",
        *([description + ".", ""] if description else []),
        f"- Model: `{info['model']}`, {info['parameters']:,} parameters, weights {info['size_bytes'] / 1e6:.2f} MB "
        f"(sha256 `{info['sha256']}`)",
        *([f"- Data: {info.get('data') or info['dataset']}"] if info.get("dataset") else []),
        *([f"- Fine-tuned from: `{parent['preset']}` (weights sha256 `{parent['sha256']}`)"] if parent else []),
        *([_reproduce_line(info)] if info.get("command") else []),
        f"- Load: `zoo.from_preset(\"{name}\")`; export: `aezoo export {name} --out DIR{' --micro' * ('micro' in info)}`",
        "",
        *(["## Test metrics from that run", "", metrics_table(info["metrics"]), ""] if info.get("metrics") else []),
        *sections,
        *(["## Check", "", f"{info['check']['what']}: {info['check']['reconstruction_mse']:.6f} "
           "(the test suite reloads the preset and requires this within 2%).", ""] if "check" in info else []),
        "",
    ])


def _reproduce_line(info):
    """The card's command: its run config file where the preset has one (`train_config`), else the command line."""
    took = f"; training took {info['train_seconds']} s on 2 CPU cores" if "train_seconds" in info else ""
    if info.get("train_config"):
        return f"- Reproduce: `aezoo run {info['train_config']}` (the config of `{info['command']}`{took})"
    return f"- Reproduce: `{info['command']}`" + (f" ({took[2:]})" if took else "")


def metrics_table(metrics):
    """A markdown table: one row per metric, one column per method."""
    methods = list(dict.fromkeys(m for values in metrics.values() for m in values))
    lines = ["| metric | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for metric, values in metrics.items():
        lines.append(f"| {metric} | " + " | ".join(_format(values.get(m)) for m in methods) + " |")
    return "\n".join(lines)


def _format(value):
    if value is None:
        return "–"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):
        return f"{int(value):,}"  # counts
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def upload_preset(handle, folder):
    """Publishes a preset folder to the Hugging Face Hub as `hf://owner/name` (keras-hub's `upload_preset`).

    The folder is checked first (all its files, its config, its weights' sha256). Log in once
    with `hf auth login` (or set HF_TOKEN). Returns the URL of the commit.

    Example:
        >>> model.save_to_preset("my_denoiser", metadata={"dataset": "my_scans"})
        >>> zoo.upload_preset("hf://me/my_denoiser", "my_denoiser")
    """
    from huggingface_hub import HfApi

    if not str(handle).startswith(HF_PREFIX) or "@" in str(handle):
        raise ZooError(f"upload_preset needs a handle hf://owner/name, got {handle!r}; write it that way")
    check_folder(folder)
    repo_id = str(handle)[len(HF_PREFIX):]
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"Upload preset {Path(folder).name}")


def check_folder(folder):
    """Refuses a folder that is not a complete, loadable preset (one line naming the missing part)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ZooError(f"{folder} is not a folder; write a preset with model.save_to_preset({str(folder)!r})")
    missing = [file for file in REQUIRED_FILES if not (folder / file).exists()]
    if missing:
        raise ZooError(f"preset folder {folder} lacks {', '.join(missing)}; write it with model.save_to_preset")
    read_config(folder, folder)
    if sha256(folder / WEIGHTS) != read_json(folder, METADATA, folder).get("sha256"):
        raise ZooError(f"preset folder {folder}: {WEIGHTS} does not match the sha256 in {METADATA}; write it again "
                       "with model.save_to_preset")


class PresetMixin:
    """`from_preset` and `save_to_preset` for every zoo model (the autoencoder families and the types built on
    their backbones: vae, cvae, vq_vae, aae, wae, masked_ae)."""

    @classmethod
    def from_preset(cls, handle, **overrides):
        """Loads a preset of this class (see `zoo.from_preset`); a preset of another family is refused.

        Example:
            >>> model = zoo.model_class("conv_ae").from_preset("conv_ae_fashion_mnist")
        """
        return from_preset(handle, family=cls, **overrides)

    def save_to_preset(self, folder, metadata=None, run_config=None, overwrite=False):
        """Writes this model as a preset folder: config.json, metadata.json, model.weights.h5,
        README.md and, given the run's config as TOML text, train.toml.

        The folder is written beside its final place and renamed into it, so a preset is never
        half-written; an existing folder is kept unless `overwrite=True`.

        Args:
            folder: where the preset goes; its name is the card's title.
            metadata: what the card records beyond the model: `description`, `dataset`, `data`,
                `task`, `metrics` ({metric: {method: value}}), the `command` that measured them,
                `parent` ({"preset": handle, "sha256": ...}) for a fine-tuned preset.
            run_config: the TOML text of the run config that trained it, written to train.toml.
            overwrite: replace an existing folder.

        Example:
            >>> model.save_to_preset("my_preset", metadata={"dataset": "mnist5k", "task": "reduce"})
            >>> same = zoo.from_preset("my_preset")
        """
        return save_preset(self, folder, metadata, run_config, overwrite=overwrite)


CHECK_DESCRIPTIONS = {
    "fashion_mnist": "the first 200 Fashion-MNIST test images",
    "co2": "the first 200 test windows of the co2 series",
}


def check_examples(dataset="fashion_mnist"):
    """(inputs, class labels) of the fixed test slice a card's check figure is measured on (Fashion-MNIST's
    ships with the package); labels None where the data set has none."""
    import numpy as np

    if dataset != "fashion_mnist":
        from zoo import data

        loaded = data.load(dataset)
        return loaded.x_test[:200], None if loaded.y_test is None else loaded.y_test[:200]
    with np.load(CHECK_SLICE) as arrays:
        return arrays["images"].astype("float32") / 255.0, arrays["labels"].astype("int32")


def check_slice(for_model, dataset="fashion_mnist"):
    """The check slice's inputs, as `for_model` reads them (an LSTM: rows of grey pixels, no channel axis)."""
    images = check_examples(dataset)[0]
    return images[..., 0] if dataset == "fashion_mnist" and len(for_model.data_shape) == 2 else images


def is_conditional(model):
    """Whether `model` reads class labels beside its inputs (the cvae)."""
    return model.registry_name == "cvae"


def check_inputs(model, dataset="fashion_mnist", count=200):
    """What `model.predict` takes for the first `count` examples of the check slice: the inputs, paired
    with their class labels for a conditional model."""
    x = check_slice(model, dataset)[:count]
    return (x, check_examples(dataset)[1][:count]) if is_conditional(model) else x


def check_description(model, dataset="fashion_mnist"):
    """What a card's check figure is measured on, in words."""
    labels = " given their class labels" if is_conditional(model) else ""
    return f"mean squared reconstruction error on {CHECK_DESCRIPTIONS[dataset]}{labels}"


def check_reconstruction(model, dataset="fashion_mnist"):
    """Mean squared reconstruction error on the check slice of `dataset`: the figure a card stores."""
    import numpy as np

    x = check_slice(model, dataset)
    return float(np.mean((np.asarray(model.predict(check_inputs(model, dataset), batch_size=100, verbose=0)) - x) ** 2))
