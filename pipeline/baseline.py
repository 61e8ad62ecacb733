"""A linear baseline on the same splits: TF-IDF word and character n-grams with logistic regression.

What a ten-line scikit-learn model scores, logged beside every search's final model (and a train
run's with ``baseline.enabled=true``), so that a researcher sees when the LSTM does not beat it.
Fit on the training split only; its regularisation ``C`` chosen on the validation split (the
smallest C among the best, on a tie); scored once on the test split.

A job starts it (:func:`start`) before any run is opened: the n-gram vocabularies, the step that
can refuse the data, are fit then, so such data is a one-line error that records nothing; the
classifiers, the test scores and the file to log are made in a background thread beside the
job's training, whose cores the LSTM leaves partly idle (README, "Hyperparameter search").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from pipeline import evaluate
from pipeline.data import Splits
from pipeline.errors import DataError, first_line


@dataclass
class Baseline:
    """The fitted baseline and what it scored."""

    #: The scikit-learn pipeline: raw texts -> TF-IDF features -> logistic regression.
    model: Any
    C: float
    val_accuracy: float
    #: ``evaluate.classification_metrics`` on the test split.
    test: Dict[str, float]
    #: The fitted model as the bytes of the file to log, when :func:`start` was asked to make one.
    file: Optional[bytes] = None

    def metrics(self) -> Dict[str, float]:
        """As logged: ``baseline.val_accuracy``, ``baseline.test_accuracy``, ``baseline.test_f1_macro``, ..."""
        return {"baseline.C": self.C, "baseline.val_accuracy": self.val_accuracy,
                **{f"baseline.test_{k}": v for k, v in self.test.items()}}


def beside(fitted: Optional[Baseline]) -> str:
    """`` (baseline 0.9906)``: its test accuracy, shown beside a model's; nothing when it did not run."""
    return "" if fitted is None else f" (baseline {fitted.test['accuracy']:.4f})"


def probabilities(model: Any, texts: Any, num_classes: int) -> np.ndarray:
    """(n, num_classes) class probabilities, a column for every class of the label map."""
    probs = np.zeros((len(texts), num_classes))
    probs[:, model.classes_] = model.predict_proba(list(texts))
    return probs


class Pending:
    """A baseline being fit in a background thread (:func:`start`); :meth:`result` waits for it."""

    def __init__(self, work: Callable[[], Baseline]) -> None:
        self._work = work
        self._fitted: Optional[Baseline] = None
        self._error: Optional[BaseException] = None
        # a daemon: Ctrl-C, SIGTERM or an error ends the job at once, not after the fits
        self._thread = threading.Thread(target=self._run, name="baseline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fitted = self._work()
        except BaseException as e:  # raised where the job waits for it
            self._error = e

    def result(self) -> Baseline:
        """The fitted baseline, once its thread is done; what it raised, raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._fitted is not None
        return self._fitted


def fit(splits: Splits, settings: Any) -> Baseline:
    """Fit on train, choose ``C`` among ``settings.C`` on validation, score on test."""
    return _classify(splits, *_features(splits, settings))


def start(splits: Splits, settings: Any, file: Optional[Callable[[Any], bytes]] = None) -> Pending:
    """:func:`fit`, its n-gram vocabularies fit now (a :class:`DataError` for a training split they
    cannot be fit on is raised here) and the rest in a background thread, which also makes
    ``file(model)`` (the bytes to log) when given."""
    features, x_train, grid = _features(splits, settings)

    def work() -> Baseline:
        fitted = _classify(splits, features, x_train, grid)
        if file is not None:
            fitted.file = file(fitted.model)
        return fitted

    return Pending(work)


def _features(splits: Splits, settings: Any) -> Tuple[Any, Any, List[float]]:
    """The TF-IDF word and character n-grams fit on the training split: the features, the training
    split's matrix and the grid of ``C``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    grid = sorted(float(c) for c in settings.C)
    if not grid or grid[0] <= 0:
        raise DataError(f"baseline.C must be a non-empty list of numbers above 0, got {list(settings.C)}")
    features = make_union(
        TfidfVectorizer(ngram_range=tuple(settings.word_ngrams), sublinear_tf=True, min_df=int(settings.min_df)),
        TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(settings.char_ngrams), sublinear_tf=True, min_df=int(settings.min_df)),
    )
    try:
        x_train = features.fit_transform(splits.train.texts)
    except ValueError as e:  # e.g. no word or character n-gram in any training text
        raise DataError(f"the TF-IDF baseline cannot be fit on this training split ({first_line(e)}); set baseline.enabled=false") from None
    return features, x_train, grid


def _classify(splits: Splits, features: Any, x_train: Any, grid: List[float]) -> Baseline:
    """One logistic regression per ``C`` on the training features, the best on validation kept and
    scored once on the test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline

    y_train, y_val = splits.label_ids(splits.train), splits.label_ids(splits.val)
    x_val = features.transform(splits.val.texts)
    best = None
    for c in grid:
        classifier = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        accuracy = float(accuracy_score(y_val, classifier.predict(x_val)))
        if best is None or accuracy > best[1]:
            best = (classifier, accuracy, c)
    classifier, val_accuracy, c = best  # type: ignore[misc]
    model = make_pipeline(features, classifier)
    test = evaluate.classification_metrics(splits.label_ids(splits.test), probabilities(model, splits.test.texts, len(splits.classes)))
    return Baseline(model, c, val_accuracy, test)
