"""Test-split metrics that stay honest on imbalanced data, and the plots that go with them."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np


#: The confidence of the interval logged around every test accuracy.
CONFIDENCE = 0.95


def accuracy_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """The Wilson score interval on an accuracy of ``correct`` out of ``total`` (SciPy's).

    Wilson's rather than the normal approximation: it stays inside [0, 1] and keeps its
    coverage at accuracies near 1 and on small test splits, which is where a researcher most
    needs to see that two models do not really differ.
    """
    from scipy.stats import binomtest

    if total < 1:
        return (math.nan, math.nan)
    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def with_interval(metrics: Dict[str, float], prefix: str = "") -> str:
    """``0.9437 [0.9238, 0.9586]``: an accuracy and its 95% interval, as the last lines show it."""
    value = metrics[f"{prefix}accuracy"]
    low, high = metrics.get(f"{prefix}accuracy_ci_low"), metrics.get(f"{prefix}accuracy_ci_high")
    return f"{value:.4f}" if low is None or high is None else f"{value:.4f} [{low:.4f}, {high:.4f}]"


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> Dict[str, float]:
    """Accuracy and its 95% Wilson interval, macro precision/recall/F1, Matthews correlation,
    and ROC-AUC for two classes."""
    from sklearn import metrics

    y_pred = probs.argmax(axis=1)
    low, high = accuracy_interval(int(np.sum(y_pred == np.asarray(y_true))), len(y_pred))
    out = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "precision_macro": float(metrics.precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(metrics.recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mcc": _mcc(metrics, y_true, y_pred),
    }
    if probs.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(metrics.roc_auc_score(y_true, probs[:, 1]))
    return out


def _mcc(metrics: Any, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation; 0 where the texts and the predictions hold one label, without
    scikit-learn's warning about its confusion matrix's shape on stderr (a test file of one class)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        return float(metrics.matthews_corrcoef(y_true, y_pred))


def confusion(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(num_classes)))


def misclassified(texts: List[str], y_true: np.ndarray, probs: np.ndarray, classes: List[str], limit: int) -> Any:
    """The most confidently wrong test texts first, as a DataFrame."""
    import pandas as pd

    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    order = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")][:limit]
    return pd.DataFrame(
        {
            "text": [texts[i] for i in order],
            "true_label": [classes[y_true[i]] for i in order],
            "predicted_label": [classes[y_pred[i]] for i in order],
            "confidence": probs[order, y_pred[order]].round(6),
        }
    )


def _plain(text: Any) -> str:
    """A label drawn as written: matplotlib reads text between two ``$`` as TeX maths (``$^$`` in a
    class name or run name failed the plot, and the run); ``\\$`` is its literal dollar sign."""
    return str(text).replace("$", r"\$")


def plot_learning_curves(history: Dict[str, List[float]]) -> Any:
    """Loss and accuracy per epoch, train beside validation."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's) stays as it is

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix: np.ndarray, classes: List[str]) -> Any:
    """Counts, with each cell's share of its true class as the colour."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's) stays as it is

    n = len(classes)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 * n + 3, 1.2 * n + 2))
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), [_plain(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [_plain(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_search_scores(table: Any, names: List[str], objective: str) -> Any:
    """The objective over each searched value, and over units x embedding size when both are searched."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's) stays as it is

    done = table[table["score"].notna()]
    pair = "model.units" in names and "model.embedding_dim" in names
    panels = len(names) + (1 if pair else 0)
    fig = Figure(figsize=(4 * panels, 3.6))
    axes = fig.subplots(1, panels, squeeze=False)
    for ax, name in zip(axes[0], names):
        values = done[name].astype(float) if done[name].dtype != object else done[name].astype(str).map(_plain)
        ax.scatter(values, done["score"], alpha=0.8)
        ax.set_xlabel(_plain(name))
        ax.set_ylabel(_plain(objective))
        ax.grid(alpha=0.3)
    if pair:
        ax = axes[0][-1]
        points = ax.scatter(done["model.units"], done["model.embedding_dim"], c=done["score"], cmap="viridis", s=60)
        ax.set_xlabel("model.units")
        ax.set_ylabel("model.embedding_dim")
        fig.colorbar(points, ax=ax, label=_plain(objective))
    fig.tight_layout()
    return fig


def plot_comparison(labels: List[str], values: List[float], metric: str) -> Any:
    """One bar per run, best first: the comparison a `pipeline compare` logs."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's) stays as it is

    fig = Figure(figsize=(7, 0.4 * len(labels) + 1.2))
    ax = fig.subplots()
    positions = np.arange(len(labels))[::-1]
    ax.barh(positions, values, color="tab:blue", alpha=0.8)
    ax.set_yticks(positions, [_plain(label) for label in labels], fontsize=8)
    finite = [v for v in values if np.isfinite(v)]
    if finite:
        low, high = min(finite), max(finite)
        pad = max((high - low) * 0.5, 0.01)
        ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(_plain(metric))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
