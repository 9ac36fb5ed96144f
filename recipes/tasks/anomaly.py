"""Anomaly detection: train an autoencoder on normal windows of a series, flag test windows it reconstructs badly.

Scores, one per window (higher = more anomalous):
- autoencoder: the mean squared reconstruction error over the window's time steps and features.
- z-score baseline (no model): the window's largest absolute z-score, max over t and f of
  |x[t, f] - mean_f| / std_f, where mean_f and std_f are taken over every value of feature f in
  the training windows. x is the window as the loader gives it (its own mean removed, divided by
  the training spread), the same input the autoencoder sees.

Threshold, chosen the same way for both methods: the `threshold_percentile`-th percentile of the
method's scores on the training windows; a test window is flagged when its score is above it.
With window labels the report gives ROC-AUC (threshold-free) and precision/recall at that
threshold; a series without labels (a CSV with no label column) gets scores and flags only.
"""

import csv

import numpy as np
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from recipes.engine.checkpoints import atomic_write
from recipes.engine.evaluation import batches
from recipes.engine.report import Results, pyplot, save_figure
from zoo.errors import ZooError


def scored_window_starts(data):
    """Start index in the series of each test window (those kept after a --quick cut)."""
    return data.info["test_starts"][: len(data.x_test)]


def reconstruction_error(model, windows):
    """Mean squared reconstruction error per window (an array or streamed windows, batch by batch)."""
    return np.concatenate([
        np.mean((np.asarray(model.predict_on_batch(batch), "float32") - batch) ** 2, axis=(1, 2)) for batch in batches(windows)
    ])


def feature_spread(windows):
    """Each feature's mean and standard deviation over every value of the windows, summed batch by batch."""
    total = squares = count = 0
    for batch in batches(windows):
        values = batch.reshape(-1, batch.shape[-1]).astype("float64")
        total, squares, count = total + values.sum(axis=0), squares + (values**2).sum(axis=0), count + len(values)
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def max_abs_zscore(windows, mean, std):
    """Largest |z| per window, z standardised by each feature's (training) mean and std."""
    std = np.where(std > 0, std, 1.0)
    return np.concatenate([np.max(np.abs((batch - mean) / std), axis=(1, 2)) for batch in batches(windows)])


def run(ctx):
    data = ctx.load_data()
    if "test_starts" not in data.info:
        raise ZooError(
            f"the anomaly recipe needs a time series, got {data.name!r} of shape {data.input_shape}; "
            "use --data co2 or --data series.csv (one row per time step, numeric columns, optional label column)"
        )
    results = Results()
    normal = np.ones(len(data.x_train), bool) if data.y_train is None else data.y_train == 0
    if not normal.all():
        results.notes.append(f"{int((~normal).sum())} labelled training windows left out: training uses normal windows only")
    x_train = data.x_train[normal]

    # Standardised series are not in [0, 1]: a sigmoid output could not reach them.
    model, _ = ctx.train(ctx.build_model(data.input_shape, output_activation="linear"), x_train)
    ctx.model = model

    percentile = ctx.params["threshold_percentile"]
    spread = feature_spread(x_train)
    scores = {
        "autoencoder": (reconstruction_error(model, x_train), reconstruction_error(model, data.x_test)),
        "z-score": (max_abs_zscore(x_train, *spread), max_abs_zscore(data.x_test, *spread)),
    }
    thresholds = {method: np.percentile(train, percentile) for method, (train, _) in scores.items()}
    flags = {method: test > thresholds[method] for method, (_, test) in scores.items()}

    results.add("test windows flagged", {method: flagged.sum() for method, flagged in flags.items()})
    labels = data.y_test
    if labels is not None and len(np.unique(labels)) == 2:
        results.add("ROC-AUC", {method: roc_auc_score(labels, test) for method, (_, test) in scores.items()})
        results.add("precision", {m: precision_score(labels, f, zero_division=0) for m, f in flags.items()})
        results.add("recall", {m: recall_score(labels, f, zero_division=0) for m, f in flags.items()})
        results.notes.append(f"{int(labels.sum())} of {len(labels)} test windows contain a labelled anomaly")
    elif labels is None:
        results.notes.append("the series has no labels: scores and flags only, no ROC-AUC, precision or recall")
    else:
        results.notes.append(f"every test window has label {labels[0]}: ROC-AUC, precision and recall are undefined")
    results.notes.append(
        f"threshold: the {percentile:g}th percentile of each method's scores on the {len(x_train)} training windows "
        f"({', '.join(f'{m} {t:.4g}' for m, t in thresholds.items())})"
    )
    results.notes.append(
        "autoencoder score: mean squared reconstruction error of the window; z-score score: the window's largest "
        "|value - training mean| / training std (per feature)"
    )
    write_window_scores(ctx.run_dir / "window_scores.csv", data, scores, flags)
    results.notes.append("every test window's scores and flags: window_scores.csv")
    results.plots.append(plot_flags(ctx.run_dir, data, scores, thresholds, flags))
    return results, data


def write_window_scores(path, data, scores, flags):
    """One CSV row per test window: its time span, label (if known), and each method's score and flag."""
    starts = scored_window_starts(data)
    columns = {"start": starts, "end": starts + data.info["window"]}
    if data.y_test is not None:
        columns["label"] = data.y_test
    for method, (_, test) in scores.items():
        columns[f"{method} score"] = test
        columns[f"{method} flagged"] = flags[method].astype(int)

    def write(temporary):
        with open(temporary, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(zip(*columns.values()))

    atomic_write(path, write)


def plot_flags(run_dir, data, scores, thresholds, flags):
    """The series with its labelled anomalies and each method's flagged windows, then the scores over time."""
    plt = pyplot()
    series, window = np.asarray(data.info["series"]), data.info["window"]
    series = series.reshape(len(series), -1)
    starts = scored_window_starts(data)
    time = np.arange(len(series))
    point_labels = data.info.get("point_labels")

    fig, axes = plt.subplots(len(flags) + 1, 1, figsize=(11, 2.6 * (len(flags) + 1)), sharex=True)
    for ax, (method, flagged) in zip(axes, flags.items()):
        ax.plot(time, series, lw=0.7, color="0.35")
        covered = np.zeros(len(series), bool)  # the union of the flagged windows
        for start in starts[flagged]:
            covered[start : start + window] = True
        ax.fill_between(time, 0, 1, where=covered, transform=ax.get_xaxis_transform(), color="tab:orange",
                        alpha=0.3, lw=0, label="flagged windows")
        if point_labels is not None:
            anomalous = np.flatnonzero(point_labels)
            ax.scatter(anomalous, series[anomalous, 0], s=9, color="tab:red", zorder=3, label="labelled anomalies")
        ax.axvline(starts[0], color="k", ls="--", lw=0.8)
        ax.set_title(f"{method}: {int(flagged.sum())} of {len(flagged)} test windows flagged", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)

    ax = axes[-1]
    for method, (_, test) in scores.items():
        ax.plot(starts + window / 2, test / thresholds[method], lw=0.9, label=method)
    ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set_ylabel("score / threshold")
    ax.set_xlabel("time step (test split right of the dashed line; scores at window centres)")
    ax.set_title("window scores relative to each method's threshold (flagged above 1)", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    return save_figure(fig, run_dir, "flagged_windows")
