"""Distillation from the linear baseline: the LSTM trained on the label mixed with a teacher's
class probabilities (``training.distill.alpha``).

A model with this setting trains on ``alpha`` x the label's one-hot + (1 - alpha) x the teacher's
probabilities (its loss is alpha x cross-entropy with the label + (1 - alpha) x cross-entropy with
the teacher, cross-entropy being linear in its target). The teacher is the TF-IDF baseline
(``pipeline/baseline.py``: the same word and character n-grams, logistic regression) fit on the
texts the model trains on and nothing else, its probabilities *out of fold*: each text's come
from a fit on the other folds (``training.distill.folds``, stratified), so the teacher never
repeats a label it was fit on. A search's trials train on the training split and their teacher
is fit on it; a refit trains on train+validation and its teacher on those; a cross-validated
trial's fold on that fold's training rows. No teacher is fit on a text its student is validated
or tested on. Its ``C`` is the baseline's, chosen on the validation split as the baseline
chooses it: a setting chosen on validation data, as a search chooses the LSTM's, the same for
every trial (so it ranks none above another); choosing it out of fold instead took four times
the fits (84 s for BBC News's training split here, against 26 s).

What the model is validated on is unchanged: ``val_loss`` is the cross-entropy with the label
(early stopping and a search's pruning read what they read without it), and ``accuracy`` in a
fit's history is agreement with the label, not with the mixed target. After the fit the model
is compiled again with the standard loss, so evaluating, averaging and saving it are as without
distillation. Measured on validation data (``bench/distill.py``, README "How the defaults were
chosen").

The teacher is deterministic (fixed folds, L-BFGS), so a rerun trains on the same targets; it
is computed once per process for the same texts, labels and settings.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any, Dict, Optional, Sequence

import numpy as np

#: What a teacher that cannot be fit is called in its one-line error, and the setting that turns it off.
WHAT, OFF = "the distillation's teacher (the TF-IDF baseline)", "training.distill.alpha=null"

#: teacher probabilities by (texts, labels, settings) digest: a search's trials share one teacher
_TEACHERS: Dict[str, np.ndarray] = {}


def _digest(texts: Sequence[str], labels: np.ndarray, num_classes: int, settings: Any, folds: int, c: float) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00\xff")  # not in UTF-8: texts cannot run into each other
    h.update(np.asarray(labels, dtype="<i8").tobytes())
    described = {k: list(settings[k]) if k in ("word_ngrams", "char_ngrams") else settings[k]
                 for k in ("word_ngrams", "char_ngrams", "min_df")}
    h.update(json.dumps([described, num_classes, folds, float(c)], default=str).encode())
    return h.hexdigest()


def teacher(texts: Sequence[str], labels: np.ndarray, num_classes: int, settings: Any, folds: int, c: float,
            off: str = OFF) -> np.ndarray:
    """(n, num_classes) out-of-fold probabilities of the TF-IDF baseline at ``C=c`` over ``texts``.

    ``folds`` stratified folds (fewer when the largest class has fewer texts), fixed (not the run's seed: the
    same texts get the same teacher whatever seed trains on them). A text whose fold leaves fewer
    than two classes to fit on gets its own label as its teacher (nothing to learn from there).
    The features are fit on all of ``texts`` (no label is read), as ``settings`` say (texts
    without any: a one-line error, :data:`WHAT` and ``off``, the setting that turns it off).
    """
    from sklearn.model_selection import StratifiedKFold

    from pipeline import baseline

    labels = np.asarray(labels, dtype="int64")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts and {len(labels)} labels")
    key = _digest(texts, labels, num_classes, settings, folds, c)
    if key in _TEACHERS:
        return _TEACHERS[key]
    onehot = np.eye(num_classes)[labels]
    # fewer folds than asked where even the largest class has fewer texts (scikit-learn refuses that)
    k = min(int(folds), int(np.bincount(labels).max()) if len(labels) else 0)
    if k < 2 or len(np.unique(labels)) < 2:
        probs = onehot
    else:
        x, _ = baseline.features(list(texts), settings, WHAT, off)
        with warnings.catch_warnings():  # a class with fewer texts than folds: some folds lack it
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splits = list(StratifiedKFold(k, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels))
        fittable = [(train, held) for train, held in splits if len(np.unique(labels[train])) > 1]
        probs = onehot.copy()
        for (_, held), classifier in zip(fittable, baseline.logistic_fits([(float(c), x[train], labels[train]) for train, _ in fittable])):
            probs[held] = baseline.per_class(classifier, classifier.predict_proba(x[held]), num_classes)
    probs.setflags(write=False)
    _TEACHERS[key] = probs
    return probs


def targets(labels: np.ndarray, probs: Optional[np.ndarray], alpha: float, num_classes: int,
            weights: Optional[np.ndarray] = None) -> np.ndarray:
    """What a distilled fit's tf.data pipeline carries as its target, one row per text: the label
    id, the text's weight in the loss (its class weight, else 1), then the mixed target (the
    probability of class 1 for a two-class model's one sigmoid output, else one per class).
    ``probs=None``: the label alone (validation data)."""
    labels = np.asarray(labels, dtype="int64")
    onehot = np.eye(num_classes)[labels]
    mixed = onehot if probs is None else alpha * onehot + (1.0 - alpha) * np.asarray(probs)
    if num_classes == 2:
        mixed = mixed[:, 1:]
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype="float64")
    return np.column_stack([labels, weights, mixed]).astype("float32")


def loss(binary: bool) -> Any:
    """Each text's weight x the cross-entropy of the model's output with its mixed target."""
    import keras

    def distilled_crossentropy(y_true: Any, y_pred: Any) -> Any:
        target = y_true[:, 2:]
        crossentropy = keras.losses.binary_crossentropy if binary else keras.losses.categorical_crossentropy
        return y_true[:, 1] * crossentropy(target, y_pred)

    return distilled_crossentropy


def accuracy(binary: bool) -> Any:
    """``accuracy``: how often the model's class is the label (not the mixed target)."""
    import keras
    from keras import ops

    def label_accuracy(y_true: Any, y_pred: Any) -> Any:
        predicted = ops.cast(y_pred[:, 0] > 0.5, "float32") if binary else ops.cast(ops.argmax(y_pred, axis=-1), "float32")
        return ops.cast(ops.equal(y_true[:, 0], predicted), "float32")

    return keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")
