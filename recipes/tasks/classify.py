"""Classification with few labels: pretrain an autoencoder on every training image (labels
unused), then fine-tune its encoder with a softmax head on a stratified labelled subset, for
each fraction in params.label_fractions.

params.pretraining sets what the autoencoder learns: to give each image back ("reconstruct"), or
to fill a random rectangle blanked out of it ("inpaint", the inpaint recipe's task): a code that
must predict hidden parts of the object holds more of what the object is (masked-image
pretraining, as in context encoders and masked autoencoders); or, with the masked_ae model
(`--model masked_ae`, on the Transformer backbone), to fill the random patches it hides of each
image ("masked", He et al. 2022), its encoder then fine-tuned as the conv one is.

Fine-tuning is linear probe, then fine-tune (Kumar et al., 2022): the head starts as a
logistic regression fitted on the pretrained codes of the labelled examples, so the first
gradient steps do not wreck the pretrained features while a random head is still learning.

With params.augment_shift > 0 both classifiers see each labelled image shifted by up to that many
pixels and, with params.augment_flip (for classes that mirroring keeps: garments, not digits),
mirrored at random, drawn anew every batch: the usual guard against memorising a few hundred
labelled images (on Fashion-MNIST's centred garments it gains little; docs/experiments/classify.md).

With params.pseudo_labels_per_class > 0 the unlabelled images teach too (self-training): each
trained classifier labels the training images outside the labelled subset, and a student,
started as its teacher was, trains on the labelled images and the ones the teacher is surest of,
that many per class; params.pseudo_label_rounds > 1 makes each student the next round's teacher.
Students are reported as columns of their own ("autoencoder + pseudo-labels", "from scratch +
pseudo-labels"), so that what pretraining adds shows with and without self-training.

Baseline: the same network (encoder architecture + head), initialised at random and trained
on the same labelled examples with the same batches and budget; and, with every label, Keras'
MNIST convnet from scratch (`tutorials.CONVNET`, trained as the tutorial trains it: no
augmentation). With --from-preset the preset's pretrained autoencoder is the starting point and
pretraining is skipped.

Both classifiers' batch-norm statistics are recomputed over their labelled examples each epoch
(`training.PreciseBatchNorm`): with few labels the moving averages have not settled, which
would depress whichever network has batch norm for a reason unrelated to its features.
"""

import dataclasses

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from threadpoolctl import threadpool_limits

from recipes.engine import training
from recipes.engine.evaluation import predict
from recipes.engine.report import Results, pyplot, save_figure
from recipes.tasks import tutorials
from recipes.tasks.classifiers import classifier, same_network
from recipes.tasks.transforms import occlusion_transform
from zoo.data import random_shift_flip
from zoo.errors import ZooError, unknown_name

PROBE_EXAMPLES = 2000
SELF_TRAINED = " + pseudo-labels"  # a self-trained classifier's column: its teacher's method + this
# params.pretraining -> the autoencoder's training transform: the image back from itself, or from
# the image with a random rectangle blanked out (as the inpaint recipe trains; sides 25-50%).
# "masked": the masked_ae hides patches itself, so its images come as they are.
PRETRAINING = {"reconstruct": None, "inpaint": occlusion_transform(min_fraction=0.25, max_fraction=0.5), "masked": None}
MASKED_MODEL = "masked_ae"


def probe_head_weights(codes, labels, classes):
    """(kernel (M, classes), bias) of a softmax layer equal to a logistic regression fitted on `codes`.

    The regression sees standardised codes (it converges in far fewer steps); the scaling is
    folded into the returned weights. Classes absent from `labels` get zero weights and a
    bias below every other class's.
    """
    mean, scale = codes.mean(axis=0), codes.std(axis=0) + 1e-6
    with threadpool_limits(1):  # on 2 busy cores, BLAS/OpenMP threads waiting on each other made this 15x slower
        probe = LogisticRegression(max_iter=300).fit((codes - mean) / scale, labels)
    coef, intercept = probe.coef_, probe.intercept_
    if len(probe.classes_) == 2:  # one logit for two classes: a softmax over (0, logit) is the same model
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
    kernel = np.zeros((codes.shape[1], classes), "float32")
    bias = np.full(classes, intercept.min() - 10.0, "float32")
    kernel[:, probe.classes_] = (coef / scale).T
    bias[probe.classes_] = intercept - coef @ (mean / scale)
    return kernel, bias


def probed_classifier(pretrained, classes, x, y, seed):
    """A copy of `pretrained`'s encoder with a softmax head fitted to its codes of (x, y): linear probe, then fine-tune.

    The probe only starts the head, so it sees at most PROBE_EXAMPLES of the examples (a
    logistic regression on all 54k Fashion-MNIST codes would take minutes).
    """
    autoencoder = same_network(pretrained, keep_weights=True)
    sample = np.random.default_rng(seed).permutation(len(x))[:PROBE_EXAMPLES]
    codes = predict(autoencoder.encoder, x[sample])
    return classifier(autoencoder, classes, probe_head_weights(codes, y[sample], classes))


def confident_pseudo_labels(probabilities, per_class):
    """(indices, classes) of the `per_class` rows of `probabilities` most confidently predicted as each
    class (fewer where fewer rows predict it): a class-balanced set of pseudo-labels, so that the
    classes a classifier finds easiest do not crowd out the rest."""
    predicted, confidence = probabilities.argmax(axis=-1), probabilities.max(axis=-1)
    picks = [members[np.argsort(-confidence[members], kind="stable")[:per_class]]
             for members in (np.flatnonzero(predicted == c) for c in range(probabilities.shape[1]))]
    indices = np.sort(np.concatenate(picks))
    return indices, predicted[indices]


def labelled_subset(y, fraction, seed):
    """Indices of a stratified subset: round(fraction x class size) examples of each class, at least one.

    Each class's examples are drawn from one permutation seeded by `seed` (an int or a
    sequence of ints), so with the same seed smaller fractions are subsets of larger ones.
    """
    rng = np.random.default_rng(seed)
    picks = [
        rng.permutation(members)[: max(1, round(fraction * len(members)))]
        for members in (np.flatnonzero(y == c) for c in np.unique(y))
    ]
    return np.sort(np.concatenate(picks))


def augmentation(params, input_shape):
    """The classifiers' training transform: each labelled image shifted by up to
    params.augment_shift pixels and, with params.augment_flip, mirrored at random (None: neither)."""
    shift, flip = params["augment_shift"], params["augment_flip"]
    height, width = input_shape[:2]
    if not 0 <= shift < min(height, width):
        raise ZooError(f"params.augment_shift must be 0 to {min(height, width) - 1} pixels for {height}x{width} inputs, got {shift}")
    if not shift and not flip:
        return None
    return lambda x, y, rng: (random_shift_flip(x, rng, shift, flip), y)


def self_train(ctx, teacher, build_student, data, subset, repeated, settings, augment, tag):
    """A student classifier, `build_student(x, y)` (started as its teacher was), trained on the teacher's
    labelled examples (`repeated`, indices into the training split) and on the unlabelled training
    images the teacher classifies most confidently, labelled by the teacher (self-training with
    pseudo-labels; a fresh student rather than the teacher itself, which would only confirm its
    own predictions)."""
    unlabelled = np.setdiff1d(np.arange(len(data.y_train)), subset)
    chosen, pseudo_labels = confident_pseudo_labels(predict(teacher, data.x_train[unlabelled]),
                                                    ctx.params["pseudo_labels_per_class"])
    examples = np.concatenate([repeated, unlabelled[chosen]])
    x, y = data.x_train[examples], np.concatenate([data.y_train[repeated], pseudo_labels])
    model, _ = ctx.train(lambda: build_student(x, y), x, y, tag=tag,
                         settings=dataclasses.replace(settings, epochs=ctx.params["pseudo_label_epochs"]),
                         compile_fn=training.compile_classifier, transform=augment)
    return model


def fraction_label(fraction):
    """0.01 -> '1%'."""
    return f"{fraction * 100:g}%"


def confusion_plot(run_dir, matrices, title):
    """Confusion matrices (rows: true class, columns: predicted), one panel per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.2), squeeze=False)
    for ax, (method, matrix) in zip(axes[0], matrices.items()):
        ax.imshow(matrix, cmap="Blues")
        for (true, predicted), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=6, color=color)
        ax.set_title(f"{method}: {title}", fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_xticks(range(len(matrix))), ax.set_yticks(range(len(matrix)))
    return save_figure(fig, run_dir, "confusion_matrix")


def check_pretraining(ctx):
    """Refuses an unknown params.pretraining, and "masked" without the masked_ae (or the masked_ae without it)."""
    pretraining = ctx.params["pretraining"]
    if pretraining not in PRETRAINING:
        raise unknown_name("params.pretraining", pretraining, PRETRAINING)
    if not ctx.from_preset and (pretraining == "masked") != (ctx.model_name == MASKED_MODEL):
        raise ZooError(f"params.pretraining='masked' goes with the {MASKED_MODEL} model and the {MASKED_MODEL} with it "
                       f"(got {pretraining!r} and {ctx.model_name}); for masked pretraining run with "
                       f"--model {MASKED_MODEL} --set params.pretraining=masked")


def pretraining_note(pretraining, pretrained):
    """What the autoencoder was given to fill in, for the report ("" when it gave its images back)."""
    if pretraining == "inpaint":
        return ", each with a random rectangle blanked out to be filled in"
    if pretraining == "masked":
        return f", each with {pretrained.mask_ratio:.0%} of its patches hidden to be filled in (a masked autoencoder)"
    return ""


def run(ctx):
    check_pretraining(ctx)
    data = ctx.load_data()
    params = ctx.params
    fractions = _checked_fractions(data, params)
    augment = augmentation(params, data.input_shape)
    if ctx.from_preset:
        pretrained = ctx.build_model(data.input_shape)()
    else:
        transform = PRETRAINING[params["pretraining"]]
        pretrained, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train, tag="pretrain", transform=transform)
    ctx.model = pretrained

    classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    settings = dataclasses.replace(
        ctx.settings,
        epochs=params["classifier_epochs"],
        learning_rate=params["classifier_learning_rate"],
        validation_fraction=0.0,  # a 1% subset leaves too few labels to hold some out: fixed budget instead
        patience=0,
        contrastive_weight=0.0,  # a term of the autoencoder's pretraining; the classifiers learn from labels
    )
    results, predictions, details = Results(), {}, []
    tutorial = None
    if fractions[-1] == 1.0:  # the tutorial network trains on every label, so it is compared at 100%
        tutorial = tutorials.train(ctx, tutorials.CONVNET, results, data.x_train, data.y_train, settings, classes=classes)
    elif ctx.params["tutorial_baseline"]:
        results.notes.append(f"no {tutorials.CONVNET.label}: it trains on every label, and params.label_fractions leaves out 1.0")
    for fraction in fractions:
        details.append(_score_fraction(ctx, data, pretrained, classes, settings, augment, fraction, results, predictions))

    if tutorial:
        label, row = tutorials.CONVNET.label, f"accuracy, {fraction_label(1.0)} labels"
        predictions[label] = predict(tutorial, data.x_test).argmax(axis=-1)
        results.add(row, {**results.metrics[row], label: np.mean(predictions[label] == data.y_test)})
        tutorials.add_comparison(results, row, "autoencoder", tutorials.CONVNET)
    # `predictions` now holds the largest fraction's classifiers (its first draw)
    matrices = {m: confusion_matrix(data.y_test, p, labels=range(classes)) for m, p in predictions.items()}
    results.plots.append(confusion_plot(ctx.run_dir, matrices, f"{fraction_label(fractions[-1])} labels"))
    results.notes += _method_notes(ctx, params, pretrained, augment, details)
    return results, data


def _checked_fractions(data, params):
    """The label fractions, sorted, after the checks that need the data: labels, classes, self-training."""
    if data.y_train is None:
        raise ZooError(f"the classify recipe needs labels; {data.name} has none (use a labelled data set)")
    if len(np.unique(data.y_train)) < 2:
        raise ZooError(f"the classify recipe needs at least two classes, and the training split of {data.name} has one "
                       "(an image folder: one sub-folder per class)")
    fractions = sorted(params["label_fractions"])
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ZooError(f"params.label_fractions must be shares in (0, 1] (1.0: every label), got {fractions}")
    if params["pseudo_labels_per_class"] > 0 and fractions[0] == 1.0:
        raise ZooError("params.pseudo_labels_per_class needs a label fraction below 1.0 (with every label no image is "
                       "left to pseudo-label); add one to params.label_fractions or set it to 0")
    return fractions


def _score_fraction(ctx, data, pretrained, classes, settings, augment, fraction, results, predictions):
    """Trains and scores every method on `fraction` of the labels (several draws below 100%); adds the
    accuracy row to `results`, the first draw's test predictions to `predictions`; returns the detail note."""
    params, seed = ctx.params, ctx.settings.seed
    draws = params["label_draws"] if fraction < 1 else 1  # every label: one possible subset
    accuracies = {}
    for draw in range(draws):
        subset = labelled_subset(data.y_train, fraction, [seed, draw])
        repeated = np.resize(subset, max(len(subset), params["min_pass_examples"]))
        x, y = data.x_train[subset], data.y_train[subset]
        builders = {  # method -> (tag, f(labelled x, y) -> its classifier before training)
            "autoencoder": ("finetune", lambda x, y: probed_classifier(pretrained, classes, x, y, seed)),
            "from scratch": ("scratch", lambda x, y: classifier(same_network(pretrained, keep_weights=False), classes)),
        }
        suffix = f"-{fraction * 100:g}pct" + (f"-draw{draw + 1}" if draws > 1 else "")
        models = {}
        for method, (tag, build) in builders.items():
            models[method], _ = ctx.train(lambda: build(x, y), data.x_train[repeated], data.y_train[repeated],
                                          tag=tag + suffix, settings=settings,
                                          compile_fn=training.compile_classifier, transform=augment)
        if params["pseudo_labels_per_class"] > 0 and fraction < 1:
            for method, (tag, build) in builders.items():
                teacher = models[method]
                for round_ in range(params["pseudo_label_rounds"]):  # each round's student teaches the next
                    teacher = self_train(ctx, teacher, build, data, subset, repeated, settings, augment,
                                         tag=f"{tag}-pseudo{suffix}" + (f"-round{round_ + 1}" if round_ else ""))
                models[method + SELF_TRAINED] = teacher
        for method, model in models.items():
            predicted = predict(model, data.x_test).argmax(axis=-1)
            accuracies.setdefault(method, []).append(np.mean(predicted == data.y_test))
            if draw == 0:
                predictions[method] = predicted
    results.add(f"accuracy, {fraction_label(fraction)} labels", {m: np.mean(a) for m, a in accuracies.items()})
    per_draw = "; ".join(f"{m} " + " ".join(f"{a:.3f}" for a in values) for m, values in accuracies.items())
    draw_note = f", {draws} draws ({per_draw})" if draws > 1 else ""
    return f"{fraction_label(fraction)}: {len(subset)} labelled examples{draw_note}"


def _method_notes(ctx, params, pretrained, augment, details):
    """The report's notes on how each method was trained and scored."""
    passes = f"{params['classifier_epochs']} passes of at least {params['min_pass_examples']} examples"
    if augment:
        passes += (f", each image shifted by up to {params['augment_shift']} pixels"
                   + (" and mirrored left-right at random" if params["augment_flip"] else ""))
    source = (
        f"preset {ctx.from_preset}'s encoder"
        if ctx.from_preset
        else "encoder pretrained as an autoencoder on all training images"
        + pretraining_note(params["pretraining"], pretrained)
    )
    notes = [
        f"autoencoder: {source} + softmax head initialised by logistic regression on its codes of the labelled "
        "examples, then fine-tuned end to end; from scratch: the same network, randomly initialised (head included)",
        f"both train on the same stratified labelled subset and batches: {passes} (smaller subsets are repeated), "
        "no early stopping, batch-norm statistics recomputed over the labelled examples every epoch; "
        "below 100% of the labels each accuracy is the mean over several random labelled "
        "subsets, since with a few examples per class the draw moves accuracy by several points",
        *details,
    ]
    if params["pseudo_labels_per_class"] > 0:
        notes.append(
            f"'{SELF_TRAINED.strip()}' columns: below 100% of the labels, a student started as its teacher was (autoencoder: "
            f"pretrained encoder, probed head; from scratch: at random) and trained for {params['pseudo_label_epochs']} "
            f"passes on the labelled examples and the unlabelled training images the teacher, that column's trained "
            f"classifier, predicts most confidently, {params['pseudo_labels_per_class']} per class, labelled by it"
            + (f"; {params['pseudo_label_rounds']} rounds, each round's student the next one's teacher"
               if params["pseudo_label_rounds"] > 1 else ""))
    return notes
