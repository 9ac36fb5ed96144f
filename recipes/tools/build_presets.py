"""Builds the shipped presets: each is the model of one `aezoo run` (full Fashion-MNIST, or a series).

`aezoo presets --build NAME ...` runs the preset's recipe command (or resumes it) into
runs/presets/NAME, then writes the preset folder zoo/presets/NAME/. The card's command is
exactly the one that ran, so anyone can reproduce it.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from recipes.engine.checkpoints import atomic_write, train_seconds
from recipes.tools.doc_tables import write_docs_section
from zoo import presets
from zoo.errors import ZooError, unknown_name


class Preset(NamedTuple):
    """One shipped preset: the `aezoo run` arguments that train it and what its card adds."""

    description: str
    args: list  # after `aezoo run`, before `--data`
    dataset: str = "fashion_mnist"
    headline: str | None = None  # the metric the preset tables show; None: the recipe's first
    micro: bool = False  # export int8 for TFLite Micro and put its flash and arena bytes on the card
    compare: tuple = ()  # other model families run by the same recipe, reported beside it
    table_baselines: tuple = ()  # the methods the preset tables list beside the headline; () all of them
    # Fashion-MNIST runs: the recipes' small default batches suit a few thousand images, not 60,000.
    batch_size: int = 128


CONVERGE = ["--set", "train.optimizer=adamw", "--set", "train.lr_schedule=cosine", "--set", "train.warmup_epochs=1",
            "--set", "train.patience=0"]
# Sequence families are compared with PCA, not with the tutorial conv AE (an image network).
CONVERGE_SEQUENCE = [*CONVERGE, "--set", "params.tutorial_baseline=false"]
# Normalised SiLU stages with a residual block each: +0.9 to 1.1 dB PSNR over plain SiLU stages for the
# restoration recipes (denoise, 15k images, 4 epochs). Batch norm with the statistics recomputed each
# epoch scored as GroupNorm there (18.44 / 19.37 dB against 18.37 / 19.26) and folds into the
# convolutions at export, where GroupNorm's float32 mean and variance cost int8 files their arena.
RESIDUAL = ["--set", "model.normalization=batch", "--set", "model.activation=silu", "--set", "model.blocks_per_stage=1",
            "--set", "model.upsampling=resize"]


def conv_vae_run(hidden_units, *options, epochs=10):
    """The generate run of a conv-backbone VAE preset: [32, 64] filters, `hidden_units` wide, SiLU and
    resize + conv upsampling, then `options`, then the shared training for `epochs`."""
    backbone = (f"model.backbone_config={{filters=[32, 64], hidden_units={hidden_units}, "
                'activation="silu", upsampling="resize"}')
    return ["generate", "--set", "model.backbone=conv", "--set", backbone, *options, "--set", "model.kl_warmup_steps=800",
            "--set", "params.importance_samples=20", *CONVERGE, "--set", "train.learning_rate=0.002", "--epochs", str(epochs)]


# name -> its recipe run (nanoGPT-style literal registry).
PRESETS = {
    "dense_ae_fashion_mnist": Preset("Fully connected autoencoder, 16-dim codes", ["reduce", "--model", "dense_ae"]),
    "conv_ae_fashion_mnist": Preset(
        "Convolutional autoencoder, 16-dim codes (SiLU, nearest-neighbour resize + conv upsampling, AdamW + cosine decay)",
        ["reduce", "--model", "conv_ae", "--set", "model.filters=[32, 64]", "--set", "model.hidden_units=256",
         "--set", "model.activation=silu", "--set", "model.upsampling=resize", *CONVERGE,
         "--set", "train.learning_rate=0.004", "--epochs", "12"],
        batch_size=64,
    ),
    "lstm_ae_fashion_mnist": Preset(
        "LSTM autoencoder reading image rows as a sequence, 16-dim codes (TFLite Micro ready: no TILE)",
        ["reduce", "--model", "lstm_ae", "--set", "model.units=[128]", "--set", "model.repeat=broadcast",
         *CONVERGE_SEQUENCE, "--epochs", "20"],
    ),
    "transformer_ae_fashion_mnist": Preset(
        "Transformer autoencoder on 7x7 patches, 16-dim codes (TFLite Micro ready: ReLU feed-forward)",
        ["reduce", "--model", "transformer_ae", "--set", "model.patch_size=7", "--set", "model.activation=relu",
         "--set", "train.learning_rate=0.002", *CONVERGE_SEQUENCE, "--epochs", "12"],
    ),
    "vae_conv_fashion_mnist": Preset(
        "Convolutional VAE, 16-dim latent (SiLU, resize + conv upsampling; sampling, interpolation; AdamW + cosine "
        "decay, KL warm-up)",
        conv_vae_run(256, epochs=15),
    ),
    "vae_conv_2d_fashion_mnist": Preset(
        "Convolutional VAE with a 2-D latent space (latent map; SiLU, resize + conv upsampling; AdamW + cosine decay, "
        "KL warm-up)",
        # 128 hidden units: through a 2-D code, 256 buy nothing and would double the file.
        conv_vae_run(128, "--set", "model.latent_dim=2"),
    ),
    "conv_ae_denoise_fashion_mnist": Preset(
        "Convolutional denoiser, 512-dim spatial code (16x16x2 with the 8x8 and 4x4 stages' context; Gaussian and "
        "salt-and-pepper noise; batch-norm + SiLU residual stages, resize + conv upsampling, AdamW + cosine decay)",
        # docs/experiments/denoise.md: what each change of the network and training gave.
        ["denoise", "--set", "model.latent_dim=512", "--set", "model.code=spatial", "--set", "model.code_stage=0",
         "--set", "model.filters=[40, 64, 64]", *RESIDUAL, *CONVERGE, "--set", "train.learning_rate=0.004",
         "--epochs", "28"],
        batch_size=32,
    ),
    "conv_ae_inpaint_fashion_mnist": Preset(
        "Convolutional inpainter, 64-dim codes (rectangular occlusions; batch-norm + SiLU residual stages, resize + "
        "conv upsampling, AdamW + cosine decay)",
        # 20 epochs: 12 reached 17.32 dB on the occluded pixels, still improving.
        ["inpaint", "--set", "model.latent_dim=64", *RESIDUAL, *CONVERGE, "--set", "train.learning_rate=0.002",
         "--epochs", "20"],
    ),
    "vq_vae_fashion_mnist": Preset(
        "VQ-VAE image codec: a 7x7 grid of indices into 64 codes, arithmetic-coded with one frequency table per grid "
        "cell (bytes per image, PSNR and SSIM against the JPEG, WebP and 8-bit PCA settings of the table below)",
        # The compress recipe's own batch of 64: the setting docs/recipes.md reports. The preset tables give PSNR
        # beside WebP's and JPEG's smallest files of the sweep and 32 one-byte PCA components.
        ["compress", "--epochs", "6"],
        headline="PSNR (dB)", table_baselines=("WebP quality 0", "JPEG quality 5", "PCA 32 components, 8-bit"),
        batch_size=64,
    ),
    "cvae_fashion_mnist": Preset(
        "Conditional VAE, 16-dim latent (784-400 dense networks; the one-hot class enters the encoder's heads and "
        "the decoder): samples of a chosen class",
        # 30 epochs, the recipe's default: the longer it trains, the more of the class its samples take from the
        # label rather than from z (conditional accuracy 0.79 after 10 epochs, 0.84 after 30).
        ["generate", "--model", "cvae", "--epochs", "30"],
    ),
    "dense_ae_co2_micro": Preset(
        "Dense autoencoder for time-series anomaly detection on microcontrollers (Cortex-M4 class: int8 model "
        "<= 256 KB flash, <= 64 KB arena), trained on normal 32-step windows of the Mauna Loa CO2 series",
        ["anomaly", "--model", "dense_ae"],
        dataset="co2", headline="ROC-AUC", micro=True, compare=("lstm_ae", "transformer_ae"),
    ),
}
DATA_DESCRIPTIONS = {
    "fashion_mnist": "fashion_mnist (60,000 train / 10,000 test images)",
    "co2": "co2 (weekly Mauna Loa CO2, 32-step windows; labelled anomalies injected into the test half)",
}
MICRO_LIMITS = {"flash_bytes": 256 * 1024, "arena_bytes": 64 * 1024}  # a Cortex-M4 class board
RUNS_DIR = Path("runs/presets")


def command_for(name, model=None, out=None):
    """The `aezoo run` arguments of preset `name` (with `model`: the same recipe for another family)."""
    preset = PRESETS[name]
    args = preset.args if model is None else [preset.args[0], "--model", model]
    batch = ["--set", f"train.batch_size={preset.batch_size}"] if preset.dataset == "fashion_mnist" else []
    return ["run", *args, "--data", preset.dataset, *batch, "--out", str(out or RUNS_DIR / name)]


def run_or_resume(args):
    """Runs `aezoo ARGS` (a recipe run with --out) unless it finished, resuming an interrupted one;
    returns its run folder. The run has a process of its own, as a user's `aezoo run` would."""
    run_dir = Path(args[args.index("--out") + 1])
    config_path = run_dir / "config.json"
    if config_path.exists():
        command, recorded = "aezoo " + shlex.join(args), json.loads(config_path.read_text()).get("command")
        if recorded != command:  # a card must never show a command its model was not trained by
            raise ZooError(f"{run_dir} holds a run of another command ({recorded}); move it away to run {command}")
    if not (run_dir / "metrics.json").exists():
        command = [sys.executable, "-m", "recipes.cli", *args, *(["--resume"] if config_path.exists() else [])]
        if subprocess.run(command).returncode != 0:
            raise ZooError(f"aezoo {shlex.join(command[3:])} failed (its messages are above); fix it and build again")
    return run_dir


def build(name):
    """Trains (or resumes) preset `name` and writes its folder (weights, config, metadata, card)."""
    import keras

    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    preset, args = PRESETS[name], command_for(name)
    run_dir = run_or_resume(args)
    model = keras.models.load_model(run_dir / "model.keras", compile=False)  # no optimizer state in the weights
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    headline = preset.headline or next(iter(metrics))
    if not by_metric(metrics, headline):
        raise ZooError(f"preset {name}: its run has no metric {headline!r}; name one of its metrics.json as headline")
    metadata = {
        "description": preset.description,
        "task": preset.args[0],
        "dataset": preset.dataset,
        "data": DATA_DESCRIPTIONS[preset.dataset],
        "command": "aezoo " + shlex.join(args),
        "train_config": f"zoo/presets/{name}/{TRAIN_CONFIG}",
        "train_seconds": round(train_seconds(run_dir)),
        "metrics": metrics,
        "headline": f"{headline}: {next(iter(by_metric(metrics, headline).values())):.4g}",
        "check": {
            "what": presets.check_description(model, preset.dataset),
            "reconstruction_mse": presets.check_reconstruction(model, preset.dataset),
        },
    }
    if preset.micro:
        metadata["micro"] = _micro_footprint(model, preset.dataset, run_dir / "export")
    if preset.compare:
        metadata["compare"] = {family: _compare(name, family, headline) for family in preset.compare}
    return presets.save_preset(model, presets.PRESETS_DIR / name, metadata, run_config=train_config(name, metadata["command"]),
                               sections=card_sections(name, metadata), overwrite=True)


def _micro_footprint(model, dataset, out_dir):
    """{file: flash and measured arena bytes} of the preset's TFLite Micro export."""
    from export import export_model

    export_model(model, out_dir, quantize="int8", calibration_data=dataset, micro_target=True)
    files = json.loads((out_dir / "micro" / "micro.json").read_text())["files"]
    footprint = {file: {key: entry[key] for key in MICRO_LIMITS} for file, entry in files.items()}
    for file, entry in footprint.items():
        for key, limit in MICRO_LIMITS.items():
            if entry[key] > limit:
                raise ZooError(f"{file} needs {entry[key]:,} {key.split('_')[0]} bytes, over the board's {limit:,}")
    return footprint


def _compare(name, family, headline):
    """The same recipe and data with another model family: its parameters and headline metric."""
    import keras

    # Beside the preset's run, not inside it: that run's training time is summed over its folder.
    args = command_for(name, model=family, out=RUNS_DIR / f"{name}-compare-{family}")
    run_dir = run_or_resume(args)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    return {"parameters": int(model.count_params()), headline: metrics[headline]["autoencoder"],
            "command": "aezoo " + shlex.join(args)}


def card_sections(name, metadata):
    """What a shipped preset's card adds after its metrics: its micro footprint, other families."""
    return [*_micro_section(name, metadata.get("micro")), *_compare_section(metadata.get("compare"))]


def _micro_section(name, footprint):
    if not footprint:
        return []
    rows = [f"| `{file}` | {entry['flash_bytes']:,} | {entry['arena_bytes']:,} |" for file, entry in footprint.items()]
    return [
        "## On a microcontroller",
        "",
        f"`aezoo export {name} --out DIR --micro` writes these int8 files (and C arrays) to DIR/micro/; the arena "
        "is measured in the TFLite Micro interpreter (smallest that runs, plus a 10% margin). Limits of the "
        f"target board: {MICRO_LIMITS['flash_bytes']:,} B flash, {MICRO_LIMITS['arena_bytes']:,} B arena.",
        "",
        "| file | flash (bytes) | arena (bytes) |",
        "|---|---|---|",
        *rows,
        "",
    ]


def _compare_section(compare):
    if not compare:
        return []
    metric = next(key for key in next(iter(compare.values())) if key not in ("parameters", "command"))
    rows = [f"| `{family}` | {entry['parameters']:,} | {entry[metric]:.4g} | `{entry['command']}` |"
            for family, entry in compare.items()]
    return [
        "## The same recipe with other families",
        "",
        f"| model | parameters | {metric} | command |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


def by_metric(metrics, metric):
    """{method: value} of `metric` in a recipe's metrics: its row ({metric: {method: value}}), or its column
    where the recipe tables one method per row (compress: {method: {metric: value}})."""
    if metric in metrics:
        return metrics[metric]
    return {method: values[metric] for method, values in metrics.items() if metric in values}


def _baselines(info, methods=()):
    """The headline metric's other methods (those in `methods` if any), e.g. `tutorial denoiser 18.07, best
    filter 13.58`; else the first metric that has any, named (a VAE's tutorial network is scored on continuous
    pixels only)."""
    headline_metric = info["headline"].rsplit(": ", 1)[0]
    metrics = info["metrics"]
    for metric in [headline_metric, *metrics]:
        others = {method: value for method, value in list(by_metric(metrics, metric).items())[1:]
                  if value is not None and (not methods or method in methods)}
        if others:
            cell = ", ".join(f"{method} {value:.4g}" for method, value in others.items())
            return cell if metric == headline_metric else f"{metric}: {cell}"
    return "–"


def preset_tables():
    """The preset table of README.md and docs/presets.md, from the shipped preset files; written by
    `aezoo presets --build`. The README links each preset to its card."""
    header = [
        "| preset | model | parameters | size | headline (test split) | baselines, same run | check MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    cards = {name: presets.preset_info(name) for name in presets.list_presets()}
    for page, link in [("README.md", "zoo/presets/{name}/README.md"), ("docs/presets.md", None)]:
        rows = [
            f"| {f'[`{name}`]({link.format(name=name)})' if link else f'`{name}`'} | `{info['model']}` | "
            f"{info['parameters']:,} | {info['size_bytes'] / 1e6:.2f} MB | {info['headline']} | "
            f"{_baselines(info, PRESETS[name].table_baselines if name in PRESETS else ())} | "
            f"{info['check']['reconstruction_mse']:.5f} |"
            for name, info in cards.items()
        ]
        write_docs_section("presets", "\n".join(header + rows), page=page)


TRAIN_CONFIG = "train.toml"


def train_config(name, command=None, dumped=None):
    """The text of preset `name`'s train.toml: `aezoo run ... --dump-config` of `command` (default: the one
    its card records), so `aezoo run zoo/presets/NAME/train.toml` trains the same model on the same data.
    `dumped`: that dump's output where the caller has it already (otherwise a fresh process makes it)."""
    command = command or presets.preset_info(name)["command"]
    if dumped is None:
        process = subprocess.run([sys.executable, "-m", "recipes.cli", *shlex.split(command)[1:], "--dump-config"],
                                 capture_output=True, text=True)  # after "aezoo"
        if process.returncode:
            raise ZooError(f"preset {name}: its command no longer parses ({command}); rebuild the preset")
        dumped = process.stdout
    return (f"# Trains preset {name}: aezoo run zoo/presets/{name}/{TRAIN_CONFIG} (add --out DIR, --quick, --set ...).\n"
            f"# --dump-config of its recorded command: {command}\n\n{dumped}")


def write_train_config(name):
    """Writes zoo/presets/NAME/train.toml from the preset's recorded command; returns its path."""
    path = presets.PRESETS_DIR / name / TRAIN_CONFIG
    text = train_config(name)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


if __name__ == "__main__":  # maintainers: python -m recipes.tools.build_presets [NAME ...] rewrites the train.toml files
    for preset_name in sys.argv[1:] or presets.list_presets():
        print(write_train_config(preset_name))
