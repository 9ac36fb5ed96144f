"""Generation: train a VAE on binarised images, measure its likelihood, sample and interpolate.

Likelihood (nats per test image, Bernoulli per pixel on binarised images):
- negative ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)), the reconstruction term averaged
  over k draws z ~ q(z|x), the KL in closed form;
- importance-sampled NLL = -(logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k)
  over the same k draws (Burda et al.'s bound, tighter than the ELBO, exact as k grows).
Binarisation: training batches are fresh Bernoulli draws with the pixel intensities as
probabilities (dynamic binarisation); the test images are one draw with a fixed seed.
Beside them, the keras.io VAE tutorial's own measure: the negative ELBO on the continuous
pixel intensities (BCE summed over pixels + KL, one draw of z), for ours and for the tutorial's
VAE trained in the same run (`tutorials.VAE`).

Baseline: a plain autoencoder of the same backbone and latent width, trained on the same
binarised images, whose decoder is fed z ~ N(0, I). Sample quality of both: the Fréchet distance
between features of real test images and of samples, the features being the penultimate layer
of a small classifier trained here on the training images (FID's recipe with an in-domain
network instead of Inception; lower is better). The classifier is the classify recipe's CNN
trained from scratch (`classifiers.cnn_classifier`).

Beside the VAE, params.compare trains other generative types with the VAE's networks, latent
width, data and budget (by default the IWAE bound with k=5, beta-TCVAE, WAE-MMD and AAE); each
gets the Fréchet distance of its samples and its active units, and the ones with a posterior
q(z|x) (the VAE variants) their negative ELBO and importance-sampled NLL.

With --model cvae the recipe trains a conditional VAE on the images and their labels, samples
each class, and lets the classifier judge the samples: the conditional accuracy (the share of
samples classified as the class they were drawn for) and, per class, the Fréchet distance
between the samples and the test images of that class.
"""

import dataclasses
import re

import numpy as np
from scipy import stats

import zoo
from recipes.engine import config as recipe_config
from recipes.engine import training
from recipes.engine.evaluation import first_examples, frechet_distance, likelihood_bounds, log_likelihood, predict
from recipes.engine.report import Results, image_grid, pyplot, save_figure
from recipes.tasks import tutorials
from recipes.tasks.classifiers import cnn_classifier, penultimate_features
from zoo.errors import ZooError

ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al.'s threshold on Var_x E[z|x]


def bernoulli_draw(x, rng):
    """Binary images: each pixel is 1 with probability equal to its intensity."""
    return (rng.random(x.shape) < x).astype("float32")


def continuous_negative_elbo(model, x, seed):
    """The keras.io VAE tutorial's measure per image: BCE summed over the pixels of x (intensities in
    [0, 1]) + KL, with one draw of z; a zoo VAE or `tutorials.VAE`."""
    reconstruction, kl, _ = likelihood_bounds(model, x, k=1, seed=seed)
    return reconstruction + kl


def reconstruction_nats(model, x):
    """-log p(x | code) per image for binary x, decoding the (mean) code; any zoo model."""
    logits = np.asarray(model.decode_logits(model.encode(x)), "float32")
    return -log_likelihood(x.reshape(len(x), -1), logits.reshape(len(x), -1))


def active_units(vae, x):
    """How many latent dimensions are in use: Var over x of E[z|x] (of the code, for a deterministic
    encoder) above ACTIVE_UNIT_VARIANCE."""
    means = np.asarray(vae.encoder.predict(x, batch_size=256, verbose=0), "float64")
    return int(np.sum(means.var(axis=0) > ACTIVE_UNIT_VARIANCE))


def compile_own_objective(model, settings, optimizer):
    """The generative types bring their own objective: compiled with the optimizer alone."""
    model.compile(optimizer=optimizer)
    return model


def binarise(x, y, rng):
    """Dynamic binarisation: a fresh draw per batch, input and target alike."""
    binary = bernoulli_draw(x, rng)
    return binary, binary


def binarise_with_labels(x, labels, rng):
    """Dynamic binarisation of the inputs of a conditional model, whose labels pass through."""
    return bernoulli_draw(x, rng), labels


def run(ctx):
    model_name, options = recipe_config.model_options(ctx.config)
    if model_name == "cvae" and options.get("reconstruction_loss", "bce") == "bce":
        return run_conditional(ctx, options)
    if model_name != "vae" or options.get("reconstruction_loss", "bce") != "bce":
        raise ZooError(
            "the generate recipe reports Bernoulli likelihoods of a VAE: keep --model vae (or cvae) and "
            "model.reconstruction_loss=bce (choose the networks with --set model.backbone=dense|conv|lstm|transformer)"
        )
    data = ctx.load_data()
    params, results = ctx.params, Results()
    vae, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train, tag="vae", transform=binarise)
    ctx.model = vae
    # The baseline: the VAE's own backbone family and options, as a plain autoencoder.
    backbone = vae.get_config()["backbone_config"]

    def build_autoencoder():
        return zoo.create(f"{vae.backbone_name}_ae", data.input_shape, vae.latent_dim, **backbone)

    variants = train_variants(ctx, vae, data)
    autoencoder, _ = ctx.train(build_autoencoder, data.x_train, tag="autoencoder", transform=binarise)
    models = {"VAE": vae, **variants, "plain autoencoder": autoencoder}
    tutorial = tutorials.train(ctx, tutorials.VAE_EXAMPLE, results, data.x_train, latent_dim=vae.latent_dim)

    test, scored = first_examples(data.x_test, params["eval_examples"])
    x_test = bernoulli_draw(test, np.random.default_rng(params["binarization_seed"]))
    k = params["importance_samples"]
    add_likelihoods(results, {"VAE": vae, **variants}, x_test, k, params["binarization_seed"])
    results.add(f"active latent units (of {vae.latent_dim})",
                {name: active_units(model, test) for name, model in {"VAE": vae, **variants}.items()})
    continuous = {"VAE": vae, **({tutorials.VAE_EXAMPLE.label: tutorial} if tutorial else {})}
    metric = "negative ELBO on continuous pixels, one draw of z (nats)"
    results.add(metric, {
        name: np.mean(continuous_negative_elbo(model, test, seed=params["binarization_seed"]))
        for name, model in continuous.items()
    })
    if tutorial:
        tutorials.add_comparison(results, metric, "VAE", tutorials.VAE_EXAMPLE)
    results.add(
        "reconstruction at the mean code, -log p(x given z) (nats)",
        {name: np.mean(reconstruction_nats(getattr(model, "backbone", model), x_test)) for name, model in models.items()},
    )
    add_likelihood_notes(results, ctx, data, vae, scored, k, variants)
    add_samples(results, ctx, data, vae, models, test, x_test)
    return results, data


def add_samples(results, ctx, data, vae, models, test, x_test):
    """Every model's decoded N(0, I) codes: their Fréchet distance to the test images (where the data
    has labels), the sample grid, interpolations and, for a 2-dim VAE, its manifold."""
    params = ctx.params
    n = min(params["quality_samples"], len(test))
    codes = np.random.default_rng(params["binarization_seed"]).standard_normal((n, vae.latent_dim)).astype("float32")
    samples = {name: np.asarray(model.decode(codes)) for name, model in models.items()}
    if data.y_train is None:
        results.notes.append("no labels: the sample-quality measure needs a classifier trained on labels and is skipped")
    else:
        results.add("Fréchet distance to test images (classifier features)", sample_quality(ctx, data, test, samples, n, results))

    rows = [(f"{name}: decoder fed N(0, I)" if row == 0 else "", images[8 * row : 8 * row + 8])
            for name, images in samples.items() for row in range(2)]
    spread = np.linspace(0, len(test) - 1, 8).astype(int)  # splits may be ordered by class
    results.plots.append(image_grid(ctx.run_dir, "samples", rows + [("test images", test[spread])]))
    results.plots.append(plot_interpolations(ctx.run_dir, models, x_test, seed=params["binarization_seed"]))
    if vae.latent_dim == 2:
        results.plots.append(plot_manifold(ctx.run_dir, vae))


def train_variants(ctx, vae, data):
    """params.compare's models ({column: {"name": a zoo type, options...}}), each with the VAE's networks,
    latent width and reconstruction likelihood, trained on the same binarised images and budget."""
    shared = {"latent_dim": vae.latent_dim, "backbone": vae.backbone_name,
              "backbone_config": vae.get_config()["backbone_config"], "reconstruction_loss": "bce"}
    variants = {}
    for column, spec in ctx.params["compare"].items():
        if not isinstance(spec, dict) or "name" not in spec:
            raise ZooError(f"params.compare.{column} must be a table with the zoo type's name, e.g. "
                           "{ name = \"wae\", mmd_weight = 10.0 }")
        options = {**shared, **{key: value for key, value in spec.items() if key != "name"}}
        tag = re.sub(r"[^a-z0-9]+", "-", column.lower()).strip("-")  # "IWAE (k=5)" -> compare-iwae-k-5/
        variants[column], _ = ctx.train(lambda: zoo.create(spec["name"], data.input_shape, **options), data.x_train,
                                        tag=f"compare-{tag}", transform=binarise, compile_fn=compile_own_objective)
    return variants


def add_likelihoods(results, models, x_test, k, seed):
    """Negative ELBO, importance-sampled NLL and the ELBO's two terms of the models with a posterior q(z|x)."""
    bounds = {name: likelihood_bounds(model, x_test, k, seed=seed)
              for name, model in models.items() if hasattr(model, "encode_distribution")}
    results.add("negative ELBO (nats)", {name: np.mean(r + kl) for name, (r, kl, _) in bounds.items()})
    results.add("NLL, importance-sampled (nats)", {name: np.mean(nll) for name, (_, _, nll) in bounds.items()})
    results.add("ELBO reconstruction term (nats)", {name: np.mean(r) for name, (r, _, _) in bounds.items()})
    results.add("ELBO KL term (nats)", {name: np.mean(kl) for name, (_, kl, _) in bounds.items()})


def add_likelihood_notes(results, ctx, data, vae, scored, k, variants):
    params = ctx.params
    results.notes.append(
        f"likelihood: Bernoulli per pixel, nats per test image ({scored}), NLL from k={k} importance samples; "
        f"binarisation: training batches are fresh Bernoulli draws of the pixel intensities (dynamic), the test images "
        f"one draw with seed {params['binarization_seed']}"
    )
    results.notes.append(
        "negative ELBO on continuous pixels: the keras.io VAE tutorial's objective on the [0, 1] test images, BCE "
        "summed over pixels + KL, with one draw of z per image; our VAE trains on binarised draws of the images, "
        "whose expected BCE is this one"
    )
    results.notes.append(
        f"active latent units: dimensions whose mean code E[z|x] varies over the test images with variance above "
        f"{ACTIVE_UNIT_VARIANCE} (Burda et al. 2016); the others carry no information about x (posterior collapse)"
    )
    if variants:
        described = "; ".join(f"{column}: {params['compare'][column]}" for column in variants)
        results.notes.append(
            f"compared types, trained with the VAE's networks, latent width, images and budget: {described}; "
            "likelihoods only for those with a posterior q(z|x) (the deterministic codes of WAE and AAE define none)"
        )
    results.notes.append(
        f"published reference: ~89.9 nats for a 784-400-40 VAE on binarised MNIST, trained on the full MNIST "
        f"training set; this run trains on {round(len(data.x_train) * (1 - ctx.settings.validation_fraction))} images of {data.name} for at most "
        f"{ctx.settings.epochs} epochs with latent_dim={vae.latent_dim}, so its numbers compare only in kind"
    )


def train_classifier(ctx, data, classes):
    """(classifier, its penultimate-feature model, test accuracy on the first `eval_examples`): the
    classify recipe's CNN from scratch on the grey training images and their labels."""
    settings = dataclasses.replace(ctx.settings, epochs=ctx.params["classifier_epochs"], contrastive_weight=0.0)
    classifier, _ = ctx.train(
        lambda: cnn_classifier(data.input_shape, classes), data.x_train, data.y_train,
        tag="classifier", settings=settings, compile_fn=training.compile_classifier,
    )
    test, _ = first_examples(data.x_test, ctx.params["eval_examples"])
    accuracy = np.mean(np.argmax(predict(classifier, test), axis=1) == data.y_test[: len(test)])
    return classifier, penultimate_features(classifier), accuracy


def embedder(features, n, seed):
    """images -> features of n of them drawn at random (an array or streamed files: splits may be ordered by class)."""
    rng = np.random.default_rng(seed)

    def embed(images):
        picks = rng.choice(len(images), min(n, len(images)), replace=False)
        return predict(features, images[np.sort(picks)]).astype("float64")

    return embed


def sample_quality(ctx, data, test, samples, n, results):
    """Fréchet distances of each method's samples (and of real training images, the floor) to n of the `test` images."""
    _, features, accuracy = train_classifier(ctx, data, class_count(data))
    embed = embedder(features, n, ctx.params["binarization_seed"])
    real = embed(test)
    distances = {method: frechet_distance(real, embed(images)) for method, images in samples.items()}
    distances["training images (reference)"] = frechet_distance(real, embed(data.x_train))
    results.notes.append(
        f"sample quality: Fréchet distance between {n} random test images and {n} samples in the penultimate "
        f"layer (the code) of a CNN classifier trained here on the grey training images (test accuracy {accuracy:.1%}); "
        "lower is better; 'training images' is the distance real images reach with the same n"
    )
    return distances


def class_count(data):
    return int(max(data.y_train.max(), data.y_test.max())) + 1


def run_conditional(ctx, options):
    """--model cvae: class-conditional samples judged by a classifier trained in the same run."""
    data = ctx.load_data()
    if data.y_train is None or data.y_test is None:
        raise ZooError(f"the cvae draws samples of given classes and trains on labels, and {data.name} has none; "
                       "use a labelled data set (e.g. --data fashion_mnist, or an image folder with one sub-folder per class) "
                       "or --model vae")
    classes = class_count(data)
    asked = options.get("num_classes")
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < classes):
        raise ZooError(f"the labels of {data.name} run from 0 to {classes - 1}, outside model.num_classes={asked}; "
                       f"set model.num_classes to {classes} or leave it out (the recipe takes it from the labels)")
    build = ctx.build_model(data.input_shape, **({} if asked else {"num_classes": classes}))
    cvae, _ = ctx.train(build, data.x_train, data.y_train, tag="cvae", transform=binarise_with_labels,
                        compile_fn=compile_own_objective)
    ctx.model = cvae
    classifier, features, test_accuracy = train_classifier(ctx, data, classes)
    results, params = Results(), ctx.params
    test, _ = first_examples(data.x_test, params["eval_examples"])
    y_test = data.y_test[: len(test)]
    per_class = max(2, params["quality_samples"] // classes)
    embed = embedder(features, per_class, params["binarization_seed"])
    names = data.info.get("classes") or [str(c) for c in range(classes)]
    hits, distances, floors, rows = 0, {}, {}, []
    for c in range(classes):
        samples = np.asarray(cvae.sample(per_class, labels=c, seed=[params["binarization_seed"], c]))
        hits += int(np.sum(np.argmax(predict(classifier, samples), axis=1) == c))
        rows.append((f"class {names[c]}: CVAE samples", samples[:8]))
        real = test[np.flatnonzero(y_test == c)]
        if len(real) < 2:  # a Gaussian needs two points; a cut test split may lack a class
            distances[c] = floors[c] = None
            continue
        real = embed(real)
        distances[c] = frechet_distance(real, embed(samples))
        floors[c] = frechet_distance(real, embed(data.x_train[np.flatnonzero(data.y_train == c)]))
    results.add("conditional accuracy (samples classified as the class asked for)",
                {"CVAE": hits / (per_class * classes), "test images (the classifier's accuracy)": test_accuracy})
    for c in range(classes):
        results.add(f"Fréchet distance to test images of class {names[c]} (classifier features)",
                    {"CVAE": distances[c], "training images of the class (reference)": floors[c]})
    results.notes += [
        f"conditional samples: {per_class} draws z ~ N(0, I) per class decoded as that class; the classifier, the classify "
        f"recipe's CNN trained here from scratch on the grey training images (test accuracy {test_accuracy:.1%}), "
        "labels them; its own test accuracy bounds what the samples can reach",
        f"per-class Fréchet distance: {per_class} samples of a class against at most {per_class} test images of it, in the "
        "classifier's penultimate layer (its code); lower is better; 'training images of the class' is the distance "
        "real images reach with the same n" + ("; none where the test split holds fewer than 2 images of the class"
                                               if None in distances.values() else ""),
        "the CVAE trains on dynamically binarised images (fresh Bernoulli draws each batch) and their labels",
    ]
    results.plots.append(image_grid(ctx.run_dir, "samples", rows))
    return results, data


def plot_interpolations(run_dir, models, x, seed, pairs=2, steps=8):
    """Each model's decoded straight lines between the codes of random pairs of test images."""
    ends = np.random.default_rng(seed).choice(len(x), (pairs, 2), replace=False)
    weights = np.linspace(0, 1, steps)[:, None]
    rows = []
    for name, model in models.items():
        for a, b in ends:
            codes = np.asarray(model.encode(x[[a, b]]))
            line = np.asarray(model.decode(((1 - weights) * codes[0] + weights * codes[1]).astype("float32")))
            rows.append((f"{name}: test image {a} -> {b}", [x[a], *line, x[b]]))
    return image_grid(run_dir, "interpolations", rows, columns=steps + 2)


def plot_manifold(run_dir, vae, side=15):
    """Decoded images on a grid of 2-D latent points at evenly spaced Gaussian quantiles."""
    plt = pyplot()
    axis = stats.norm.ppf(np.linspace(0.05, 0.95, side))
    grid = np.array([[x, y] for y in axis[::-1] for x in axis], "float32")
    images = np.asarray(vae.decode(grid)).reshape(side, side, *vae.data_shape[:2], -1)
    height, width, channels = images.shape[2:]
    tiled = images.transpose(0, 2, 1, 3, 4).reshape(side * height, side * width, channels)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(tiled[..., 0] if channels == 1 else tiled, cmap="gray", vmin=0, vmax=1)
    ticks = np.arange(0, side, 2)
    ax.set_xticks(ticks * width + width / 2, [f"{v:.2f}" for v in axis[ticks]])
    ax.set_yticks(ticks * height + height / 2, [f"{v:.2f}" for v in axis[::-1][ticks]])
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("VAE decoder over the 2-D latent space (5%-95% Gaussian quantiles)", fontsize=9)
    return save_figure(fig, run_dir, "latent_manifold")
