"""Dimensionality reduction: the autoencoder's M-dim codes against PCA with the same M.

Both methods are judged on the test split by how well they reconstruct (MSE per pixel) and
by how much label information their M numbers keep: a linear probe (standardised codes,
logistic regression fitted on the training codes) and k-NN accuracy (Euclidean, codes as
they are). A 2-D map shows the test codes coloured by label.
"""

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from recipes import tutorials
from recipes.evaluation import predict
from recipes.report import Results, pyplot, save_figure

TUTORIAL = "tutorial conv AE"


def flat(x):
    """(n, ...) -> (n, features)."""
    return x.reshape(len(x), -1)


def probe_accuracies(train_codes, y_train, test_codes, y_test, neighbours):
    """(linear-probe accuracy, k-NN accuracy) of codes on the test split, both fitted on the train codes."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    knn = KNeighborsClassifier(n_neighbors=neighbours)
    with threadpool_limits(1):  # on 2 busy cores, BLAS/OpenMP threads waiting on each other made the probe 15x slower
        return tuple(float(clf.fit(train_codes, y_train).score(test_codes, y_test)) for clf in (probe, knn))


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


def run(ctx):
    data = ctx.load_data()
    model, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train)
    ctx.model = model
    latent_dim = model.latent_dim

    x_train, x_test = flat(data.x_train), flat(data.x_test)
    pca = PCA(latent_dim, random_state=ctx.settings.seed).fit(x_train)
    codes = {
        "autoencoder": (predict(model.encoder, data.x_train), predict(model.encoder, data.x_test)),
        "PCA": (pca.transform(x_train), pca.transform(x_test)),
    }
    reconstructions = {"autoencoder": flat(predict(model, data.x_test)), "PCA": pca.inverse_transform(codes["PCA"][1])}
    results = Results()
    if ctx.params["tutorial_baseline"] and tutorials.conv_autoencoder_fits(data.input_shape):
        tutorial, _ = ctx.train(lambda: tutorials.conv_autoencoder(data.input_shape, latent_dim), data.x_train,
                                tag="tutorial", settings=tutorials.tutorial_settings(ctx.settings))
        encoder = tutorials.code_model(tutorial)
        codes[TUTORIAL] = (predict(encoder, data.x_train), predict(encoder, data.x_test))
        reconstructions[TUTORIAL] = flat(predict(tutorial, data.x_test))
        results.notes.append(
            f"{TUTORIAL}: keras.io's convolutional autoencoder (Conv2D 32 and 64, stride 2, a Dense code, mirrored "
            "Conv2DTranspose decoder) trained on the same images for the same epochs with the tutorial's Adam 1e-3, "
            "batch 128 and BCE"
        )
    elif ctx.params["tutorial_baseline"] and len(data.input_shape) == 3:
        results.notes.append(f"no {TUTORIAL}: it needs images with sides divisible by 4, got {data.input_shape}")
    results.add(
        f"reconstruction MSE (M={latent_dim})",
        {method: np.mean((r - x_test) ** 2) for method, r in reconstructions.items()},
    )
    results.notes.append(
        f"PCA keeps {pca.explained_variance_ratio_.sum():.1%} of the training variance with {latent_dim} components"
    )
    if data.y_train is None:
        results.notes.append("no labels in this data set: no linear-probe or k-NN accuracy and no label map")
    else:
        neighbours = ctx.params["neighbours"]
        accuracies = {
            method: probe_accuracies(train, data.y_train, test, data.y_test, neighbours)
            for method, (train, test) in codes.items()
        }
        results.add("linear-probe accuracy", {method: acc[0] for method, acc in accuracies.items()})
        results.add(f"{neighbours}-NN accuracy", {method: acc[1] for method, acc in accuracies.items()})
        results.notes.append(
            "linear probe: logistic regression on standardised codes, fitted on the training codes; "
            f"{neighbours}-NN: Euclidean distance between the codes as they are (PCA's are not whitened)"
        )
        shown = slice(0, ctx.params["map_examples"])
        how = "the codes themselves" if latent_dim == 2 else "the first two principal components of the codes"
        results.notes.append(f"2-D map: {how}, for the first {len(data.y_test[shown])} test examples")
        results.plots.append(
            code_map(ctx.run_dir, {method: test[shown] for method, (_, test) in codes.items()}, data.y_test[shown],
                     data.info.get("classes"))
        )
    for metric, values in results.metrics.items():
        ours = values["autoencoder"]
        for baseline in ("PCA", TUTORIAL):
            theirs = values.get(baseline)
            if theirs is not None and ((ours >= theirs) if "MSE" in metric else (ours <= theirs)):
                results.notes.append(f"{baseline} does as well or better on {metric}: {theirs:.4f} against {ours:.4f}")
    if TUTORIAL in codes:
        mse = results.metrics[f"reconstruction MSE (M={latent_dim})"]
        results.add(f"reconstruction MSE, ours / {TUTORIAL}", {"autoencoder": mse["autoencoder"] / mse[TUTORIAL]})
    return results, data
