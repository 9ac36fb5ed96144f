"""What a run leaves for people: metrics beside their baselines, plots, and report.md tying them together."""

import json
from pathlib import Path

import numpy as np

from recipes.engine.checkpoints import atomic_write
from zoo.presets import metrics_table


class Results:
    """Metrics of one run, each compared across methods (ours and the baselines), plus plots and notes.

    Example:
        >>> results = Results()
        >>> results.add("PSNR (dB)", {"autoencoder": 24.1, "median filter": 20.3})
        >>> results.plots.append("plots/grid.png")
    """

    def __init__(self):
        self.metrics, self.plots, self.notes = {}, [], []
        self.sections = []  # (title, markdown) pairs appended to the report

    def add(self, metric, values_by_method):
        self.metrics[metric] = {method: _plain(v) for method, v in values_by_method.items()}

    def value(self, metric, method):
        return self.metrics[metric][method]


def _plain(value):
    """JSON-ready: counts stay integers (so reports print "2", not "2.0000"), the rest floats."""
    if value is None:
        return None
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def write_outputs(run_dir, summary, results):
    """Writes metrics.json and report.md into run_dir (atomically)."""
    run_dir = Path(run_dir)
    payload = {**summary, "metrics": results.metrics, "notes": results.notes, "plots": results.plots}
    atomic_write(run_dir / "metrics.json", lambda p: Path(p).write_text(json.dumps(payload, indent=1)))
    lines = [
        f"# {summary['recipe']}: {summary['description']}",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Data: `{summary['data']}` ({summary['train_examples']} train / {summary['test_examples']} test examples"
        + (f"; columns {', '.join(summary['columns'])}" if summary.get("columns") else "") + "). "
        f"Model: `{summary['model']}` ({summary['parameters']:,} parameters). "
        f"Precision: {summary['precision']}. Training time: {summary['train_seconds']:.0f} s.",
        "",
        "## Metrics (test split)",
        "",
        metrics_table(results.metrics),
        "",
    ]
    if results.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in results.notes], ""]
    if results.plots:
        lines += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in results.plots], ""]
    for title, text in results.sections:
        lines += [f"## {title}", "", text, ""]
    atomic_write(run_dir / "report.md", lambda p: Path(p).write_text("\n".join(lines)))


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, run_dir, name):
    """Saves `fig` as run_dir/plots/name.png and returns the relative path for the report."""
    path = Path(run_dir, "plots", f"{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    pyplot().close(fig)
    return f"plots/{name}.png"


def image_grid(run_dir, name, rows, columns=8):
    """One row of `columns` images per (label, images) pair; single-channel images shown in grey."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 1.1, len(rows) * 1.2), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                image = np.asarray(images[c])
                ax.imshow(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(label, fontsize=8, loc="left")
    return save_figure(fig, run_dir, name)
