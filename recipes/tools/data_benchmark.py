"""`aezoo benchmark data`: one training epoch from a PNG folder streamed through tf.data vs the same
images loaded into memory (a command, not a test).

    aezoo benchmark data [--sizes 10000,60000] [--epochs 2] [--folders runs/benchmark/data] [--docs]

Writes the first N Fashion-MNIST training images as 28x28 PNGs into FOLDERS/N/<class>/ (once per
size), then measures each size and path in its own child process, so that its peak resident
memory (RSS high-water mark) is its own: the child loads the folder (`stream=True` or
`stream=False`), trains conv_ae for `--epochs` epochs on the training split (80% of the
images) and reports the last epoch's samples/s (the first includes tracing). `--docs` (alias `--readme`)
writes the table into docs/data.md (section `data`).
"""

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recipes.cli import arguments

STREAM_SPEED_TARGET = 0.8  # streamed samples/s at least this share of in-memory samples/s
MEMORY_GROWTH_TARGET_MB = 150  # streamed peak RSS at the largest size at most this much above the smallest


def write_folder(folder, count):
    """The first `count` Fashion-MNIST training images as PNGs in folder/<class>/ (skipped if complete)."""
    from PIL import Image

    import zoo

    done = folder / "complete"
    if done.exists():
        return folder
    images = zoo.data.read_idx(Path(zoo.data.FASHION_MNIST_DEBIAN_DIR, "train-images-idx3-ubyte.gz"))
    labels = zoo.data.read_idx(Path(zoo.data.FASHION_MNIST_DEBIAN_DIR, "train-labels-idx1-ubyte.gz"))
    for i, (image, label) in enumerate(zip(images[:count], labels[:count])):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i:05d}.png")
    done.write_text(str(count))
    return folder


def measure(folder, stream, epochs, batch_size):
    """Loads `folder` (streamed or into memory), trains conv_ae; samples/s of the last epoch, peak RSS."""
    import zoo
    from recipes.engine import training
    from recipes.tools.benchmark import EpochClock

    started = time.perf_counter()
    data = zoo.data.load(str(folder), stream=stream)
    loaded = time.perf_counter() - started
    settings = training.TrainSettings(
        epochs=epochs, batch_size=batch_size, validation_fraction=0, patience=0, precision="float32", verbose=0
    )
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as run_dir:
        training.train(lambda: zoo.create("conv_ae", input_shape=data.input_shape, latent_dim=16), data.x_train,
                       settings=settings, run_dir=run_dir, run_name="benchmark", callbacks=[clock])
    return {
        "train_images": len(data.x_train),
        "samples_per_second": len(data.x_train) / clock.times[-1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        "load_seconds": loaded,
    }


def _in_child(folder, stream, epochs, batch_size):
    command = [sys.executable, "-m", "recipes.tools.data_benchmark", "measure", str(folder), "--epochs", str(epochs),
               "--batch-size", str(batch_size)] + (["--stream"] if stream else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"measuring {folder} (stream={stream}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(sizes, epochs, batch_size, folders):
    rows, results = [], {}
    for size in sizes:
        folder = write_folder(Path(folders) / str(size), size)
        for stream in (False, True):
            results[size, stream] = result = _in_child(folder, stream, epochs, batch_size)
            memory = results[size, False]
            rows.append(
                f"| {size:,} | {'streamed (tf.data)' if stream else 'in memory'} | {result['train_images']:,} | "
                f"{result['samples_per_second']:,.0f} | {result['samples_per_second'] / memory['samples_per_second']:.2f} | "
                f"{result['peak_rss_mb']:,.0f} | {result['load_seconds']:.1f} |"
            )
    speed = min(results[s, True]["samples_per_second"] / results[s, False]["samples_per_second"] for s in sizes)
    growth = {stream: results[sizes[-1], stream]["peak_rss_mb"] - results[sizes[0], stream]["peak_rss_mb"] for stream in (False, True)}
    return "\n".join([
        f"conv_ae (default config, M=16) on 28x28 Fashion-MNIST PNG folders, batch {batch_size}, the last of {epochs} "
        f"epochs timed, each row a fresh process, `aezoo benchmark data --sizes {','.join(map(str, sizes))} --epochs {epochs}`:",
        "",
        "| images in folder | path | training images | samples/s | vs in memory | peak RSS (MB) | load (s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Streamed speed: at least {speed:.2f} x in memory (target {STREAM_SPEED_TARGET}: "
        f"{'met' if speed >= STREAM_SPEED_TARGET else 'NOT met'}). Peak memory from {sizes[0]:,} to {sizes[-1]:,} images: "
        f"+{growth[True]:,.0f} MB streamed (target <= {MEMORY_GROWTH_TARGET_MB}: "
        f"{'met' if growth[True] <= MEMORY_GROWTH_TARGET_MB else 'NOT met'}), +{growth[False]:,.0f} MB in memory.",
    ])


def main(argv):
    parser = arguments.Parser(prog="aezoo benchmark data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what")
    child = sub.add_parser("measure", help="(internal) one measurement, printed as JSON")
    child.add_argument("folder")
    child.add_argument("--stream", action="store_true")
    for command in (parser, child):
        command.add_argument("--epochs", type=arguments.count, default=2)
        command.add_argument("--batch-size", type=arguments.count, default=128)
    parser.add_argument("--sizes", type=arguments.counts, default=[10000, 60000], help="comma list of folder sizes (images)")
    parser.add_argument("--folders", default="runs/benchmark/data", help="where the PNG folders are written")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="write the table into docs/data.md (--readme: the same)")
    args = parser.parse_args(argv)
    if args.what == "measure":
        print(json.dumps(measure(Path(args.folder), args.stream, args.epochs, args.batch_size)))
        return
    sizes = sorted(args.sizes)
    from recipes.tools.benchmark import publish

    publish(table(sizes, args.epochs, args.batch_size, args.folders), "data" if args.docs else None)


if __name__ == "__main__":
    main(sys.argv[1:])
