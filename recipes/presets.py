"""Builds the shipped presets: each is the model of one `aezoo run` on full Fashion-MNIST.

`aezoo presets --build NAME ...` runs the preset's recipe command (or resumes it) into
runs/presets/NAME, then writes zoo/presets/NAME.{weights.h5,json,md}. The card's command is
exactly the one that ran, so anyone can reproduce it.
"""

import json
import shlex
from pathlib import Path

from recipes.report import metrics_table, write_readme_section
from recipes.training import atomic_write
from zoo import presets
from zoo.errors import unknown_name

# name -> the recipe run that trains it (nanoGPT-style literal registry).
VAE_CONV = ["--set", "model.backbone=conv", "--set", "model.backbone_config={filters=[32, 64], hidden_units=128}",
            "--set", "params.importance_samples=20", "--epochs", "5"]
PRESETS = {
    "dense_ae_fashion_mnist": ("Fully connected autoencoder, 16-dim codes", ["reduce", "--model", "dense_ae"]),
    "conv_ae_fashion_mnist": ("Convolutional autoencoder, 16-dim codes", ["reduce", "--model", "conv_ae"]),
    "lstm_ae_fashion_mnist": ("LSTM autoencoder reading image rows as a sequence, 16-dim codes", ["reduce", "--model", "lstm_ae"]),
    "transformer_ae_fashion_mnist": ("Transformer autoencoder on 4x4 patches, 16-dim codes", ["reduce", "--model", "transformer_ae"]),
    "vae_conv_fashion_mnist": ("Convolutional VAE, 16-dim latent (sampling, interpolation)", ["generate", *VAE_CONV]),
    "vae_conv_2d_fashion_mnist": (
        "Convolutional VAE with a 2-D latent space (latent map)",
        ["generate", *VAE_CONV, "--set", "model.latent_dim=2"],
    ),
    "conv_ae_denoise_fashion_mnist": (
        "Convolutional denoiser (Gaussian and salt-and-pepper noise)",
        ["denoise", "--epochs", "5", "--set", "model.hidden_units=128"],
    ),
    "conv_ae_inpaint_fashion_mnist": ("Convolutional inpainter (rectangular occlusions)", ["inpaint"]),
}
RUNS_DIR = Path("runs/presets")


def command_for(name):
    description, args = PRESETS[name]
    # Batches of 128: the recipes' small default batches suit a few thousand images, not 60,000.
    return ["run", *args, "--data", "fashion_mnist", "--set", "train.batch_size=128", "--out", str(RUNS_DIR / name)]


def build(name):
    """Trains (or resumes) preset `name` and writes its weights, description and card."""
    import keras

    from recipes.cli import main

    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    args, run_dir = command_for(name), RUNS_DIR / name
    if not (run_dir / "model.keras").exists():
        main(args + (["--resume"] if (run_dir / "config.json").exists() else []))
    model = keras.models.load_model(run_dir / "model.keras", compile=False)  # no optimizer state in the weights
    config = {**model.get_config(), "dtype": "float32"}  # presets load in float32; fine-tune in any policy
    weights = presets.PRESETS_DIR / f"{name}.weights.h5"
    atomic_write(weights, model.save_weights)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first_metric, values = next(iter(metrics["metrics"].items()))
    info = {
        "description": PRESETS[name][0],
        "model": model.registry_name,
        "config": config,
        "command": "aezoo " + shlex.join(args),
        "data": "fashion_mnist (60,000 train / 10,000 test images)",
        "parameters": int(model.count_params()),
        "size_bytes": weights.stat().st_size,
        "sha256": presets.sha256(weights),
        "train_seconds": round(metrics.get("train_seconds", 0.0)),
        "metrics": metrics["metrics"],
        "headline": f"{first_metric}: {next(iter(values.values())):.4g}",
        "check": {
            "what": "mean squared reconstruction error on the first 200 Fashion-MNIST test images",
            "reconstruction_mse": presets.check_reconstruction(model),
        },
    }
    atomic_write(presets.PRESETS_DIR / f"{name}.json", lambda p: Path(p).write_text(json.dumps(info, indent=1)))
    atomic_write(presets.PRESETS_DIR / f"{name}.md", lambda p: Path(p).write_text(card(name, info)))
    return info


def card(name, info):
    """The model card: what it is, how it was made, how good it is, how to check it."""
    return "\n".join([
        f"# {name}",
        "",
        info["description"] + ".",
        "",
        f"- Model: `{info['model']}`, {info['parameters']:,} parameters, weights {info['size_bytes'] / 1e6:.2f} MB "
        f"(sha256 `{info['sha256']}`)",
        f"- Data: {info['data']}",
        f"- Reproduce: `{info['command']}` (training took {info['train_seconds']} s on 2 CPU cores)",
        f"- Load: `zoo.from_preset(\"{name}\")`; export: `aezoo export {name} --out DIR`",
        "",
        "## Test metrics from that run",
        "",
        metrics_table(info["metrics"]),
        "",
        "## Check",
        "",
        f"{info['check']['what']}: {info['check']['reconstruction_mse']:.6f} "
        "(the test suite reloads the preset and requires this within 2%).",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(info["config"], indent=1),
        "```",
        "",
    ])


def readme_table():
    """The README's preset table, from the shipped preset files; written by `aezoo presets --build`."""
    rows = [
        "| preset | model | parameters | size | headline (test split) | check MSE |",
        "|---|---|---|---|---|---|",
    ]
    for name, info in presets.list_presets().items():
        rows.append(
            f"| [`{name}`](zoo/presets/{name}.md) | `{info['model']}` | {info['parameters']:,} | "
            f"{info['size_bytes'] / 1e6:.2f} MB | {info['headline']} | {info['check']['reconstruction_mse']:.5f} |"
        )
    write_readme_section("presets", "\n".join(rows))
