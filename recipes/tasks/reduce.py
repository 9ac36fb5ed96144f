"""Dimensionality reduction: the autoencoder's M-dim codes against PCA with the same M.

Both methods are judged on the test split by how well they reconstruct (MSE per pixel) and
by how much label information their M numbers keep: a linear probe (standardised codes,
logistic regression fitted on the training codes) and k-NN accuracy (Euclidean, codes as
they are). The probe and k-NN also read the inputs themselves (`input`, up to
INPUT_FEATURES_LIMIT values): the label information all K numbers hold, against the M of a
code. A 2-D map shows the test codes coloured by label.

params.variants adds rows for the same autoencoder with a penalty on its code (sparse: sparsity="l1"
or "kl"; contractive: contractive_weight > 0; each an inline table of model options), trained
on the same data and budget and judged as the plain one is.

Streamed data (image folders in files) is never loaded whole: metrics are summed over test
batches, PCA is an IncrementalPCA fitted batch by batch on every training image, and the
probe and k-NN are fitted on the codes of the first FIT_LIMIT training images.
"""

import numpy as np
from sklearn.decomposition import PCA, IncrementalPCA

from recipes.engine.evaluation import batches, probe_accuracies
from recipes.engine.report import Results, pyplot, save_figure
from recipes.tasks import tutorials
from zoo.errors import ZooError

TUTORIAL = tutorials.CONV_AUTOENCODER.label
# The probe and k-NN on the inputs themselves: how much of the label a linear map (or a distance)
# reads from all K values, which M numbers must approach to be worth keeping instead.
INPUT = "input"
INPUT_FEATURES_LIMIT = 4096  # larger inputs (say 224x224x3 images) would not fit in memory as "codes"
FIT_LIMIT = 10_000  # streamed data: training codes the probe and k-NN are fitted on
PCA_BATCH = 1024  # streamed data: images per IncrementalPCA step


def flat(x):
    """(n, ...) -> (n, features)."""
    return x.reshape(len(x), -1)


def code_map(run_dir, codes_by_method, labels, class_names=None):
    """Scatter plots of codes, one colour per class with a legend of class names, one panel per
    method; >2-dim codes via their first 2 PCs."""
    plt = pyplot()
    classes = np.unique(labels)
    names = [class_names[c] if class_names and 0 <= c < len(class_names) else str(c) for c in classes]
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(codes_by_method), figsize=(5 * len(codes_by_method), 4.5), squeeze=False)
    for ax, (method, codes) in zip(axes[0], codes_by_method.items()):
        if codes.shape[1] == 2:
            points, how = codes, "the 2-dim codes themselves"
        else:
            points, how = PCA(2).fit_transform(codes), f"first 2 principal components of the {codes.shape[1]}-dim codes"
        for i, (label, name) in enumerate(zip(classes, names)):
            chosen = labels == label
            ax.scatter(points[chosen, 0], points[chosen, 1], color=colours(i % colours.N), s=4, alpha=0.7, label=name)
        ax.set_title(f"{method}\n{how}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    handles, _ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class", markerscale=3, frameon=False)
    return save_figure(fig, run_dir, "code_map")


def fit_pca(x, components, seed):
    """PCA of the images x: exact on an array, incremental batch by batch on streamed files."""
    if isinstance(x, np.ndarray):
        return PCA(components, random_state=seed).fit(flat(x))
    pca = IncrementalPCA(components)
    for batch in batches(x, PCA_BATCH):
        if len(batch) >= components:  # a last batch smaller than that (< M images) is left out
            pca.partial_fit(flat(batch))
    return pca


def called(model):
    """A batch function calling `model` eagerly: four models' predict functions, each traced again for
    the last, shorter batch, made TensorFlow warn of excessive retracing."""
    return lambda batch: model(batch, training=False)


def codes_and_errors(x, encoders, reconstructors):
    """Every method's codes of x, and the reconstruction MSE of the methods in `reconstructors`,
    in one pass over x's batches (functions of a NumPy batch)."""
    codes, squared, values = {method: [] for method in encoders}, dict.fromkeys(reconstructors, 0.0), 0
    for batch in batches(x):
        for method, encode in encoders.items():
            codes[method].append(np.asarray(encode(batch), "float32"))
        for method, reconstruct in reconstructors.items():
            squared[method] += float(((flat(np.asarray(reconstruct(batch), "float64")) - flat(batch)) ** 2).sum())
        values += batch.size
    return {method: np.concatenate(c) for method, c in codes.items()}, {m: s / values for m, s in squared.items()}


def variant_name(options):
    """{"sparsity": "l1", "sparsity_weight": 0.01} -> 'autoencoder, sparsity=l1, sparsity_weight=0.01'."""
    return ", ".join(["autoencoder", *(f"{option}={value}" for option, value in options.items())])


def variant_builders(ctx, input_shape):
    """{column: model builder} of params.variants, each model built once here so that a bad option is
    refused before anything trains."""
    variants = ctx.params["variants"]
    if not isinstance(variants, list) or not all(isinstance(v, dict) and v for v in variants):
        raise ZooError(f"params.variants must be a list of inline tables of model options, e.g. "
                       f"[{{sparsity = \"l1\"}}, {{contractive_weight = 0.01}}], got {variants!r}")
    if ctx.from_preset:
        return {}
    builders = {variant_name(options): ctx.build_model(input_shape, **options) for options in variants}
    for build in builders.values():
        build()
    return builders


def train_variants(ctx, builders, x):
    """{column: trained model}: each variant in run_dir/<its options>/, on the plain model's data and budget."""
    return {
        name: ctx.train(build, x, tag=name.removeprefix("autoencoder, ").replace(", ", "-").replace("=", "-"))[0]
        for name, build in builders.items()
    }


def run(ctx):
    data = ctx.load_data()
    variants = variant_builders(ctx, data.input_shape)
    model, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train)
    ctx.model = model
    latent_dim = model.latent_dim
    variants = train_variants(ctx, variants, data.x_train)

    pca = fit_pca(data.x_train, latent_dim, ctx.settings.seed)
    results = Results()
    encoders, reconstructors = compared_methods(ctx, data, model, variants, pca, results)
    fitted = slice(0, FIT_LIMIT if data.streaming else None)
    train_codes, _ = codes_and_errors(data.x_train[fitted], encoders, {})
    test_codes, mse = codes_and_errors(data.x_test, encoders, reconstructors)
    codes = {method: (train_codes[method], test_codes[method]) for method in encoders}
    if data.streaming:
        results.notes.append(
            f"streamed from files: PCA is an IncrementalPCA over the {len(data.x_train):,} training images "
            f"({PCA_BATCH} a step); the probe and k-NN are fitted on the codes of the first "
            f"{len(train_codes['PCA']):,} training images"
        )
    results.add(f"reconstruction MSE (M={latent_dim})", mse)
    if variants:
        results.notes.append("'autoencoder, <option>=<value>' columns: the autoencoder with that penalty on its code, "
                             "trained on the same data for the same epochs (not drawn in the 2-D map)")
    results.notes.append(
        f"PCA keeps {pca.explained_variance_ratio_.sum():.1%} of the training variance with {latent_dim} components"
    )
    if data.y_train is None:
        results.notes.append("no labels in this data set: no linear-probe or k-NN accuracy and no label map")
    else:
        add_label_metrics(ctx, data, codes, fitted, variants, latent_dim, results)
    add_baseline_notes(results)
    if TUTORIAL in codes:
        mse = results.metrics[f"reconstruction MSE (M={latent_dim})"]
        results.add(f"reconstruction MSE, ours / {TUTORIAL}", {"autoencoder": mse["autoencoder"] / mse[TUTORIAL]})
    return results, data


def compared_methods(ctx, data, model, variants, pca, results):
    """({method: encode function}, {method: reconstruct function}) of the autoencoder, PCA, the
    variants, the tutorial's model if it trains (it adds its rows to `results`) and the inputs."""
    encoders = {"autoencoder": called(model.encoder), "PCA": lambda x: pca.transform(flat(x))}
    reconstructors = {"autoencoder": called(model), "PCA": lambda x: pca.inverse_transform(pca.transform(flat(x)))}
    for name, variant in variants.items():
        encoders[name], reconstructors[name] = called(variant.encoder), called(variant)
    tutorial = tutorials.train(ctx, tutorials.CONV_AUTOENCODER, results, data.x_train, latent_dim=model.latent_dim)
    if tutorial is not None:
        encoders[TUTORIAL] = called(tutorials.code_model(tutorial))
        reconstructors[TUTORIAL] = called(tutorial)
    if data.y_train is not None and int(np.prod(data.input_shape)) <= INPUT_FEATURES_LIMIT:
        encoders[INPUT] = flat
    return encoders, reconstructors


def add_label_metrics(ctx, data, codes, fitted, variants, latent_dim, results):
    """The linear-probe and k-NN accuracies of every method's codes ({method: (train, test)}) and the 2-D map."""
    neighbours = ctx.params["neighbours"]
    accuracies = {
        method: probe_accuracies(train, data.y_train[fitted], test, data.y_test, neighbours)
        for method, (train, test) in codes.items()
    }
    results.add("linear-probe accuracy", {method: acc[0] for method, acc in accuracies.items()})
    results.add(f"{neighbours}-NN accuracy", {method: acc[1] for method, acc in accuracies.items()})
    features = int(np.prod(data.input_shape))
    on_inputs = (f"{INPUT}: both on the {features:,} input values themselves, not a code" if INPUT in codes
                 else f"no {INPUT} column: {features:,} input values, over the {INPUT_FEATURES_LIMIT:,} probed")
    results.notes.append(
        "linear probe: logistic regression on standardised codes, fitted on the training codes; "
        f"{neighbours}-NN: Euclidean distance between the codes as they are (PCA's are not whitened); {on_inputs}"
    )
    shown = slice(0, ctx.params["map_examples"])
    how = "the codes themselves" if latent_dim == 2 else "the first two principal components of the codes"
    results.notes.append(f"2-D map: {how}, for the first {len(data.y_test[shown])} test examples")
    results.plots.append(
        code_map(ctx.run_dir, {method: test[shown] for method, (_, test) in codes.items()
                               if method != INPUT and method not in variants},
                 data.y_test[shown], data.info.get("classes"))
    )


def add_baseline_notes(results):
    """A note for every metric on which PCA, the tutorial's model or the inputs do as well as the autoencoder."""
    for metric, values in results.metrics.items():
        ours = values["autoencoder"]
        for baseline in ("PCA", TUTORIAL, INPUT):
            theirs = values.get(baseline)
            if theirs is not None and ((ours >= theirs) if "MSE" in metric else (ours <= theirs)):
                results.notes.append(f"{baseline} does as well or better on {metric}: {theirs:.4f} against {ours:.4f}")
