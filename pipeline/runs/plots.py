"""The plots of a run: confusion matrices, training histories, the comparison chart."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    # Class names and file names are plain text: a folder called `$x^$` is no formula.
    matplotlib.rcParams["text.parse_math"] = False
    # 10.5 pt is 14.6 px at the 100 dpi the plots are saved at: no text smaller than the report's.
    matplotlib.rcParams["font.size"] = 10.5
    import matplotlib.pyplot as plt

    return plt


def _legend_outside(ax, **options) -> None:
    """The legend to the right of the axes, where it covers no data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **options)


def plot_confusion(path, y_true, y_pred, classes: list[str], title: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2.2 + 0.5 * len(classes), 1.8 + 0.5 * len(classes)))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(len(classes)), display_labels=classes,
        ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_history(path, history: dict, best_epoch: int | None = None,
                 title: str = "dense head", fine_tune_start: int = 0) -> None:
    """Accuracy and loss per epoch, train and validation, the kept epoch marked.

    ``fine_tune_start`` (epochs before fine-tuning began) draws the line
    where stage 3 unfroze the base, as the TensorFlow tutorial plots it.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, history[metric], label=f"training {metric}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label=f"validation {metric}")
        if best_epoch and "val_loss" in history:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
        if fine_tune_start:
            ax.axvline(fine_tune_start + 0.5, color="green", label="start fine-tuning")
        ax.set_ylabel(metric)
        _legend_outside(ax)
    axes[0].set_title(f"{title}: training and validation")
    axes[1].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_comparison(path, rows: list[dict], has_test: bool) -> None:
    plt = _pyplot()
    names = [r["classifier"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(2.5 + 1.2 * len(names), 4.2))
    splits = ("validation", "test") if has_test else ("validation",)
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        values = [r[split]["accuracy"] for r in rows]
        bars = ax.bar(x + (k - (len(splits) - 1) / 2) * width, values, width, label=split)
        ax.bar_label(bars, fmt="%.3f", rotation=90, padding=3)  # upright labels never overlap
    low = max(0.0, min(r[s]["accuracy"] for r in rows for s in splits) - 0.05)
    ax.set_ylim(low, 1.0 + 0.25 * (1.0 - low))  # room above a perfect bar for its label
    ax.set_yticks([t for t in ax.get_yticks() if low <= t <= 1.0])
    ax.set_xticks(x, names)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(splits))  # below: covers no bar
    ax.set_title("classifiers on the same cached features")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_reliability(path, curves: dict[str, tuple[np.ndarray, np.ndarray]], split: str) -> None:
    """One reliability diagram per classifier: accuracy against confidence, per bin."""
    from .stats import calibration_error, reliability

    plt = _pyplot()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.4, 2.9), squeeze=False)
    for ax, (name, (y, proba)) in zip(axes[0], curves.items()):
        points = reliability(y, proba)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.scatter([p["confidence"] for p in points], [p["accuracy"] for p in points],
                   s=[10 + 40 * p["count"] / len(y) for p in points])
        ax.plot([p["confidence"] for p in points], [p["accuracy"] for p in points])
        ax.set_title(f"{name}: ECE {calibration_error(points):.3f}")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"confidence ({split})")
    axes[0][0].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_feature_map(path, xy: np.ndarray, labels: np.ndarray, classes: list[str],
                     crossed: np.ndarray, circled: np.ndarray) -> None:
    """The features in two dimensions, coloured by class; errors crossed, suspects circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for k, name in enumerate(classes):
        mine = labels == k
        ax.scatter(xy[mine, 0], xy[mine, 1], s=8, alpha=0.6, label=name)
    ax.scatter(xy[crossed, 0], xy[crossed, 1], marker="x", color="black", s=28, label="misclassified")
    ax.scatter(xy[circled, 0], xy[circled, 1], facecolors="none", edgecolors="red", s=70,
               label="suspected label error")
    _legend_outside(ax, markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_learning_curves(path, budgets: list[int], curves: dict[str, np.ndarray],
                         all_labels: float | None = None) -> None:
    """Accuracy against labels, one line per strategy with its 95 % band.

    Args:
        curves: strategy -> (3, len(budgets)): mean, low and high.
        all_labels: the accuracy with every training label, drawn as a dashed line.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (mean, low, high) in curves.items():
        line, = ax.plot(budgets, mean, marker="o", label=name,
                        linestyle="--" if name == "random" else "-")
        ax.fill_between(budgets, low, high, color=line.get_color(), alpha=0.15)
    if all_labels is not None:
        ax.axhline(all_labels, color="grey", linestyle=":", label="all training labels")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labelled images")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
