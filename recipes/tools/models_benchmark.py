"""`aezoo benchmark models`: every model type trained on one data set at one budget (a command, not a test).

    aezoo benchmark models [--data fashion_mnist] [--examples 10000] [--test-examples 2000] [--epochs 5]
                           [--types vae,wae] [--docs]

Each type (TYPES) is created with latent_dim --latent-dim (the vq_vae keeps its code grid) and trained
with Adam on the first --examples training images for --epochs epochs, then judged on the first
--test-examples test images: reconstruction MSE per value; for the VAEs the negative ELBO and the
importance-sampled NLL (nats per image, Bernoulli likelihood of the [0, 1] intensities); for the types
that sample, the Fréchet distance of samples to test images in the features of a small classifier
trained on the same images; a linear probe and 5-NN on the codes; parameters; the int8 TFLite file
and the TFLite Micro arena where the type exports. `--docs` writes the table into docs/results.md
(section `models`). `--types` picks rows (by their TYPES names) instead of all.
"""

import os
import shlex
import sys
import tempfile
from pathlib import Path

from recipes.cli import arguments

# Widths that lie between the code and the input for 8x8 digits as for 28x28 images.
TRANSFORMER = {"embed_dim": 32, "num_heads": 4, "ff_dim": 64, "patch_size": 4}
# (row, registered type, options): the plain families, then the types on the conv backbone
# (the masked_ae on its only one, the Transformer).
TYPES = [
    ("dense_ae", "dense_ae", {}),
    ("conv_ae", "conv_ae", {}),
    ("lstm_ae", "lstm_ae", {"units": 32}),
    ("transformer_ae", "transformer_ae", TRANSFORMER),
    ("vae", "vae", {"backbone": "conv"}),
    ("vae iwae", "vae", {"backbone": "conv", "bound": "iwae"}),
    ("vae tc", "vae", {"backbone": "conv", "tc_weight": 5.0}),
    ("wae", "wae", {"backbone": "conv"}),
    ("aae", "aae", {"backbone": "conv"}),
    ("vq_vae", "vq_vae", {"backbone": "conv"}),
    ("cvae", "cvae", {"backbone": "conv"}),
    ("masked_ae", "masked_ae", {"backbone_config": TRANSFORMER}),
]
COLUMNS = ["reconstruction MSE", "negative ELBO (nats)", "IS-NLL (nats)", "Fréchet distance of samples",
           "linear probe", "5-NN", "parameters", "int8 file", "TFLM arena"]
IMPORTANCE_SAMPLES = 50
FRECHET_SAMPLES = 500
FEATURE_EPOCHS = 3


def create(name, options, input_shape, latent_dim):
    import zoo

    if name != "vq_vae":  # its code width is the code grid's cells x code_dim
        options = {**options, "latent_dim": latent_dim}
    if name == "lstm_ae":
        input_shape = (input_shape[0], input_shape[1] * input_shape[2])  # image rows as time steps
    return zoo.create(name, input_shape=input_shape, **options)


def shaped(model, x):
    """x as the model reads it: image rows as time steps for an LSTM."""
    return x.reshape(len(x), *model.data_shape)


def train(model, x, y, epochs, batch_size):
    import keras

    import zoo

    plain = isinstance(model, zoo.Autoencoder)
    model.compile(keras.optimizers.Adam(1e-3), **({"loss": zoo.losses.bce} if plain else {}))
    targets = y if model.registry_name == "cvae" else (x if plain else None)
    model.fit(x, targets, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def codes_and_reconstructions(model, x, y):
    """(codes as flat float rows, reconstructions): a cvae's read the labels, a vq_vae's codes are its entries."""
    import numpy as np

    if model.registry_name == "cvae":
        codes, reconstructions = model.encode(x, y), model((x, y))
    elif model.registry_name == "vq_vae":
        codes, reconstructions = model.quantizer.lookup(model.encode(x)), model(x)
    else:
        codes, reconstructions = model.encode(x), model(x)
    return np.asarray(codes, "float32").reshape(len(x), -1), np.asarray(reconstructions, "float32")


def samples(model, n, y, seed):
    """n samples of a type that samples (a cvae's as the labels y), else None."""
    import numpy as np

    if model.registry_name == "cvae":
        return np.asarray(model.sample(n, labels=y[:n], seed=seed), "float32")
    if hasattr(model, "sample"):
        return np.asarray(model.sample(n, seed=seed), "float32")
    return None


def export_cells(model, data, folder):
    """(int8 file size, TFLM arena) cells: '-' with the reason where the type does not export or convert."""
    import json

    from export.builder import micro
    from export.builder.exporter import export_model, format_size

    calibration = data.as_sequences() if model.registry_name == "lstm_ae" else data
    try:
        report = export_model(model, folder / "micro", quantize="int8", calibration_data=calibration, micro_target=True)
        listing = json.loads((folder / "micro" / micro.MICRO_DIR / micro.MICRO_FILE).read_text())
        arena = f"{max(entry['arena_bytes'] for entry in listing['files'].values()):,} B"
    except Exception as error:  # noqa: BLE001  (the cell names why this type has no arena)
        arena = f"- ({first_line(error)})"
        try:
            report = export_model(model, folder / "int8", quantize="int8", calibration_data=calibration)
        except Exception as error:  # noqa: BLE001  (the cell names why this type does not export)
            return f"- ({first_line(error)})", arena
    return format_size(report.checks[0].size_bytes), arena


def first_line(error):
    return str(error).splitlines()[0][:80] if str(error) else type(error).__name__


def feature_embedding(data, epochs, batch_size):
    """images -> the penultimate features of the classify recipe's CNN trained on the training images
    (the generate recipe's Fréchet distance embeds samples the same way)."""
    import numpy as np

    from recipes.tasks.classifiers import cnn_classifier, penultimate_features

    classes = int(data.y_train.max()) + 1
    classifier = cnn_classifier(data.input_shape, classes)
    classifier.compile("adam", loss="sparse_categorical_crossentropy")
    classifier.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    features = penultimate_features(classifier)
    return lambda images: np.asarray(features.predict(images, verbose=0), "float64")


def evaluate(model, data, embed, seed, folder):
    """The type's row of cells, in COLUMNS' order ('-' where a measure is not defined for it)."""
    import numpy as np

    import zoo
    from recipes.engine.evaluation import frechet_distance, likelihood_bounds, probe_accuracies

    x_train, x_test = shaped(model, data.x_train), shaped(model, data.x_test)
    train_codes, _ = codes_and_reconstructions(model, x_train, data.y_train)
    test_codes, reconstructions = codes_and_reconstructions(model, x_test, data.y_test)
    mse = float(np.mean((reconstructions - x_test) ** 2))
    elbo = nll = "-"
    if isinstance(model, zoo.VAE):
        reconstruction, kl, importance = likelihood_bounds(model, x_test, IMPORTANCE_SAMPLES, seed)
        elbo, nll = f"{np.mean(reconstruction + kl):.1f}", f"{np.mean(importance):.1f}"
    drawn = samples(model, min(FRECHET_SAMPLES, len(x_test)), data.y_test, seed)
    frechet = "-"
    if drawn is not None:
        frechet = f"{frechet_distance(embed(data.x_test[: len(drawn)]), embed(drawn.reshape(len(drawn), *data.input_shape))):.2f}"
    probe, knn = probe_accuracies(train_codes, data.y_train, test_codes, data.y_test, neighbours=5)
    int8, arena = export_cells(model, data, folder)
    return [f"{mse:.4f}", elbo, nll, frechet, f"{probe:.3f}", f"{knn:.3f}", f"{model.count_params():,}", int8, arena]


def selected_types(names):
    """TYPES' entries for the row names `names` (None: all), in TYPES' order."""
    from zoo.errors import unknown_name

    rows = [row for row, _, _ in TYPES]
    for name in names or ():
        if name not in rows:
            raise unknown_name("type", name, rows)
    return [entry for entry in TYPES if names is None or entry[0] in names]


def table(data_name, examples, test_examples, epochs, batch_size, latent_dim, seed=0, types=None):
    """{row: cells} of the types named in `types` (None: every type), and the markdown table with
    the line that states the budget."""
    import keras

    import zoo

    chosen = selected_types(types)
    data = zoo.data.load(data_name).take(examples, test_examples)
    keras.utils.set_random_seed(seed)
    embed = feature_embedding(data, FEATURE_EPOCHS, batch_size)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for row, name, options in chosen:
            keras.utils.set_random_seed(seed)
            model = create(name, options, data.input_shape, latent_dim)
            train(model, shaped(model, data.x_train), data.y_train, epochs, batch_size)
            rows[row] = evaluate(model, data, embed, seed, Path(folder) / row.replace(" ", "_"))
    command = (f"aezoo benchmark models --data {data_name} --examples {examples} --test-examples {test_examples} "
               f"--epochs {epochs} --batch-size {batch_size} --latent-dim {latent_dim}")
    if types is not None:
        command += " --types " + shlex.quote(",".join(row for row, _, _ in chosen))
    lines = [
        f"Each type on the first {len(data.x_train):,} training and {len(data.x_test):,} test images of {data_name}, "
        f"{epochs} epochs of Adam (1e-3), batch {batch_size}, latent_dim {latent_dim} (vq_vae: its code grid), "
        f"`{command}`; nats per image on the [0, 1] intensities ({IMPORTANCE_SAMPLES} importance samples); "
        f"Fréchet distance in the features of a classifier trained on the same images; probes on the test codes "
        "(a cvae's read the label); int8 file: the exported TFLite file; TFLM arena: the largest of its micro files.",
        "",
        "| type | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
        *[f"| {row} | " + " | ".join(cells) + " |" for row, cells in rows.items()],
    ]
    return rows, "\n".join(lines)


def main(argv=None):
    """Runs the benchmark and prints its table; with --docs also writes it into docs/results.md."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = arguments.Parser(prog="aezoo benchmark models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion_mnist", help="a labelled image data set")
    parser.add_argument("--examples", type=arguments.count, default=10000, help="training images")
    parser.add_argument("--test-examples", type=arguments.count, default=2000, help="test images")
    parser.add_argument("--epochs", type=arguments.count, default=5)
    parser.add_argument("--batch-size", type=arguments.count, default=128)
    parser.add_argument("--latent-dim", type=arguments.count, default=16)
    parser.add_argument("--types", type=lambda text: [name.strip() for name in text.split(",")],
                        help="comma-separated rows to run (default: all): " + ", ".join(row for row, _, _ in TYPES))
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from recipes.tools.benchmark import publish

    _, text = table(args.data, args.examples, args.test_examples, args.epochs, args.batch_size, args.latent_dim,
                    types=args.types)
    publish(text, "models" if args.docs else None)


if __name__ == "__main__":
    main()
