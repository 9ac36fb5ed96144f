"""Training speed of each family and the VAE on the backend Keras runs on, as a Markdown table.

For each model and precision: examples per second of `fit` on mnist5k (compilation excluded:
the first epoch warms up), peak accelerator memory where the device reports it, and the last
epoch's loss. Run it once per backend to compare them on the same data:

    KERAS_BACKEND=tensorflow python -m recipes.tools.backend_speed --out docs/speed/cpu-tensorflow.md
    KERAS_BACKEND=jax python -m recipes.tools.backend_speed --out docs/speed/cpu-jax.md
    KERAS_BACKEND=jax python -m recipes.tools.backend_speed --out gpu.md --precisions float32 mixed_float16 mixed_bfloat16 --examples 4000 --epochs 4

On a CPU-only machine `--examples 256 --epochs 2` proves the script in seconds.
"""

import argparse
import os
import time
from pathlib import Path

import keras

import zoo

MODELS = {
    "dense_ae": {"hidden_units": [256, 64]},
    "conv_ae": {"filters": [32, 64], "hidden_units": 128},
    "lstm_ae": {"units": [64]},
    "transformer_ae": {"embed_dim": 64, "num_heads": 4, "num_layers": 2, "ff_dim": 128, "patch_size": 7},
    "vae": {"backbone": "conv", "backbone_config": {"filters": [32, 64], "hidden_units": 128}},
}


def peak_memory_mb():
    """Peak memory of the first accelerator in MiB, or None where the backend does not report it."""
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20 or None
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def device_name():
    """The device Keras trains on, in words: "2 CPU cores", or "GPU"."""
    device = keras.distribution.list_devices()[0].split(":")[0]
    return f"{os.cpu_count()} CPU cores" if device == "cpu" else device.upper()


def measure(name, precision, x, epochs, batch_size):
    """(examples per second over the epochs after the first, last loss) of one model in one precision."""
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = zoo.create(name, input_shape=x.shape[1:], latent_dim=16, **MODELS[name])
        vae = isinstance(model, zoo.VAE)
        model.compile(keras.optimizers.Adam(1e-3), loss=None if vae else zoo.losses.bce)
        targets = None if vae else x
        model.fit(x, targets, batch_size=batch_size, epochs=1, verbose=0)  # compiles
        start = time.perf_counter()
        history = model.fit(x, targets, batch_size=batch_size, epochs=epochs, verbose=0).history
        seconds = time.perf_counter() - start
    finally:
        keras.config.set_dtype_policy("float32")
    return len(x) * epochs / seconds, seconds / epochs, history["loss"][-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write the table to")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--examples", type=int, default=2048, help="training examples from mnist5k")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one that compiles")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    images = zoo.data.load("mnist5k").x_train[: args.examples]
    lines = [
        f"Keras {keras.__version__} on {keras.backend.backend()} ({device_name()}), {len(images)} mnist5k images, "
        f"batch {args.batch_size}, {args.epochs} timed epochs",
        "",
        "| model | precision | examples/s | s/epoch | peak memory (MiB) | final loss |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name in args.models:
        x = images[..., 0] if name == "lstm_ae" else images
        for precision in args.precisions:
            rate, epoch_seconds, loss = measure(name, precision, x, args.epochs, args.batch_size)
            memory = peak_memory_mb()
            lines.append(f"| {name} | {precision} | {rate:.0f} | {epoch_seconds:.2f} | "
                         f"{'-' if memory is None else f'{memory:.0f}'} | {loss:.4f} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(args.out)


if __name__ == "__main__":
    main()
