"""A linear baseline on the same splits: TF-IDF word and character n-grams with logistic regression.

What a ten-line scikit-learn model scores, logged beside every search's final model (and a train
run's with ``baseline.enabled=true``), so that a researcher sees when the LSTM does not beat it.
Fit on the training split only; its regularisation ``C`` chosen on the validation split (the
smallest C among the best, on a tie); scored once on the test split. Fit before any run is
opened, so data it cannot be fit on is a one-line error that records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

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

    def metrics(self) -> Dict[str, float]:
        """As logged: ``baseline.val_accuracy``, ``baseline.test_accuracy``, ``baseline.test_f1_macro``, ..."""
        return {"baseline.C": self.C, "baseline.val_accuracy": self.val_accuracy,
                **{f"baseline.test_{k}": v for k, v in self.test.items()}}


def beside(fitted: Optional[Baseline]) -> str:
    """`` (baseline 0.9906)``: its test accuracy, shown beside a model's; nothing when it did not run."""
    return "" if fitted is None else f" (baseline {fitted.test['accuracy']:.4f})"


def probabilities(model: Any, texts: Any, num_classes: int) -> np.ndarray:
    """(n, num_classes) class probabilities, a column for every class of the label map."""
    return per_class(model, model.predict_proba(list(texts)), num_classes)


def per_class(model: Any, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """``model``'s ``predict_proba`` columns (the classes it saw in training) spread over every class."""
    spread = np.zeros((len(probs), num_classes))
    spread[:, model.classes_] = probs
    return spread


def stored(model: Any) -> Any:
    """``model`` as it is logged: each vectorizer's vocabulary held as an array of its terms (its
    ``vocabulary`` parameter, by index) instead of its fitted term -> index dict, which the vectorizer
    builds again at its first transform; the same predictions.

    skops writes a dict entry by entry into indented JSON: BBC News's 185,000 n-grams made a 150 MB
    schema that took 7.5 s to write and 7 s to load, and an array is one ``.npy`` file (README
    "Hyperparameter search"). Logged as it is: a vocabulary with a term that ends in a NUL character
    (which NumPy's strings drop), or one whose array would be mostly padding (NumPy pads every term
    to the longest, four bytes a character: one 20,000-character token among 100,000 n-grams would
    make 8 GB). ``model`` itself is not changed. The logged model predicts as ``model`` does; its
    vectorizers have that ``vocabulary`` as a parameter, so fitting it again keeps those terms.
    """
    import copy

    features = copy.copy(model.steps[0][1])
    vectorizers = []
    for name, vectorizer in features.transformer_list:
        terms = np.empty(len(vectorizer.vocabulary_), dtype=object)
        terms[list(vectorizer.vocabulary_.values())] = list(vectorizer.vocabulary_)
        lengths = [len(term) for term in terms]
        if any(term.endswith("\x00") for term in terms) or len(terms) * max(lengths, default=0) > 4 * sum(lengths) + 10**6:
            return model
        compact = copy.copy(vectorizer)
        compact.vocabulary = terms.astype(str)
        del compact.vocabulary_
        vectorizers.append((name, compact))
    features.transformer_list = vectorizers
    compact_model = copy.copy(model)
    compact_model.steps = [(model.steps[0][0], features), *model.steps[1:]]
    return compact_model


def fit(splits: Splits, settings: Any) -> Baseline:
    """Fit on train, choose ``C`` among ``settings.C`` on validation, score on test."""
    from sklearn.pipeline import make_pipeline, make_union

    (words, chars), classifier, val_accuracy, c = _chosen(splits, settings)
    model = make_pipeline(make_union(words, chars.vectorizer()), classifier)
    texts = list(splits.test.texts)
    x_test = _hstack(words.transform(texts), chars.transform(texts))
    probs = per_class(classifier, classifier.predict_proba(x_test), len(splits.classes))
    test = evaluate.classification_metrics(splits.label_ids(splits.test), probs)
    return Baseline(model, c, val_accuracy, test)


def chosen_c(splits: Splits, settings: Any, what: str, off: str) -> float:
    """The ``C`` :func:`fit` chooses on these splits (the test split is not read), for ``what``
    (which ``off`` turns off)."""
    return _chosen(splits, settings, what, off)[3]


def _chosen(splits: Splits, settings: Any, what: str = "the TF-IDF baseline", off: str = "baseline.enabled=false") -> tuple:
    """((words, characters) fitted on train, the classifier, its validation accuracy, its C): the
    best on validation of ``settings.C``, the smallest C among the best."""
    grid = c_grid(settings)
    y_train, y_val = splits.label_ids(splits.train), splits.label_ids(splits.val)
    x_train, (words, chars) = features(splits.train.texts, settings, what, off)
    x_val = _hstack(words.transform(splits.val.texts), chars.transform(splits.val.texts))
    best = None
    for c, classifier in zip(grid, logistic_fits([(c, x_train, y_train) for c in grid])):
        accuracy = float(np.mean(classifier.predict(x_val) == y_val))
        if best is None or accuracy > best[1]:
            best = (classifier, accuracy, c)
    classifier, val_accuracy, c = best  # type: ignore[misc]
    return (words, chars), classifier, val_accuracy, c


def c_grid(settings: Any) -> List[float]:
    """``settings.C``, sorted (the smallest C among the best is chosen), checked."""
    grid = sorted(float(c) for c in settings.C)
    if not grid or grid[0] <= 0:
        raise DataError(f"baseline.C must be a non-empty list of numbers above 0, got {list(settings.C)}")
    return grid


def features(texts: Any, settings: Any, what: str, off: str) -> Tuple[Any, Tuple[Any, Any]]:
    """The TF-IDF word and character n-gram features of ``texts`` (fit on them: no label is read),
    and the fitted (words, characters) vectorizers; ``what`` cannot be fit on texts without a
    feature (a one-line error that says to set ``off``)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=tuple(settings.word_ngrams), sublinear_tf=True, min_df=int(settings.min_df))
    chars = _CharNgrams(tuple(settings.char_ngrams), int(settings.min_df))
    try:
        return _hstack(words.fit_transform(texts), chars.fit_transform(texts)), (words, chars)
    except ValueError as e:  # e.g. no word or character n-gram in any training text
        raise DataError(f"{what} cannot be fit on this training split ({first_line(e)}); set {off}") from None


def _hstack(*blocks: Any) -> Any:
    """Feature blocks side by side, as the model's ``FeatureUnion`` puts them."""
    import scipy.sparse

    return scipy.sparse.hstack(blocks).tocsr()


class _CharNgrams:
    """scikit-learn's ``TfidfVectorizer(analyzer="char_wb", sublinear_tf=True, min_df=...)``, the same
    features, counted once per distinct word instead of once per occurrence.

    ``char_wb`` takes its n-grams inside each whitespace-separated word of the lower-cased text
    (padded with a space each side), so a text's counts are its word counts times each word's own
    n-gram counts: a product of two sparse matrices, both counted by scikit-learn's
    ``CountVectorizer``. scikit-learn's counting is a Python loop over every n-gram (BBC News's
    training split: 11.5 million), and most of the baseline's vectorising time; the words of a text
    repeat, and their n-grams are counted once here (53,614 distinct words: 2.5 times faster, the
    whole baseline 21-47% shorter on the five datasets, README "Hyperparameter search"). The same
    vocabulary in the same order, the same ``min_df`` and TF-IDF (scikit-learn's
    ``TfidfTransformer``), the same numbers (tests/test_baseline.py: to the last bit, except a
    training row's norm, which scikit-learn's ``fit_transform`` sums in another order); the model
    logged holds a plain ``TfidfVectorizer`` with this vocabulary and these IDF weights
    (:meth:`vectorizer`), which transforms texts the usual way.
    """

    def __init__(self, ngram_range: tuple, min_df: int) -> None:
        self.ngram_range, self.min_df = ngram_range, min_df

    def _counts(self, texts: Any, chars: Any, fit: bool) -> Any:
        import scipy.sparse
        from sklearn.feature_extraction.text import CountVectorizer

        # each text's words as char_wb splits them: after lower-casing, at any run of whitespace
        lowered = [text.lower() for text in texts]
        if not fit and not any(text.split() for text in lowered):  # no word: no n-gram
            return scipy.sparse.csr_matrix((len(lowered), len(self.terms)), dtype=np.int64)
        per_text = CountVectorizer(analyzer=str.split, lowercase=False)
        words = per_text.fit_transform(lowered)
        terms = per_text.get_feature_names_out()
        per_word = chars.fit_transform(terms) if fit else chars.transform(terms)
        # integer counts, each row's columns in no set order: TfidfTransformer converts them to floats,
        # which sorts them (SciPy's astype), so a row's norm is summed in scikit-learn's order
        return (words @ per_word).tocsr()

    def fit_transform(self, texts: Any) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer

        chars = CountVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, lowercase=False)
        try:
            counts = self._counts(texts, chars, fit=True)
        except ValueError:  # no word in any text
            counts = None
        keep = None if counts is None else np.flatnonzero(np.bincount(counts.indices, minlength=counts.shape[1]) >= self.min_df)
        if keep is None or not keep.size:  # scikit-learn's own vectorizer says what is wrong
            TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, min_df=self.min_df).fit(texts)
            raise ValueError("no character n-gram is in enough training texts")
        self.terms = chars.get_feature_names_out()[keep]
        counts = counts[:, keep]
        self.tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        return self.tfidf.transform(counts)

    def transform(self, texts: Any) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer

        chars = CountVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, lowercase=False, vocabulary=self.terms)
        return self.tfidf.transform(self._counts(texts, chars, fit=False))

    def vectorizer(self) -> Any:
        """The fitted features as scikit-learn's own ``TfidfVectorizer``, as its ``fit`` leaves it: its
        vocabulary (term -> column) and IDF weights (its public setter)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, sublinear_tf=True, min_df=self.min_df)
        vectorizer.vocabulary_ = {term: column for column, term in enumerate(self.terms.tolist())}
        vectorizer.idf_ = self.tfidf.idf_
        return vectorizer


def logistic_fits(jobs: Sequence[Tuple[float, Any, Any]]) -> list:
    """One logistic regression per (``C``, features, labels) in ``jobs``, in their order.

    Fit side by side in threads, one per job up to the number of cores (scikit-learn's wrappers
    of joblib's threading backend: the solver's sparse products and L-BFGS steps run outside
    Python's GIL), with BLAS held to one thread meanwhile (threadpoolctl; restored after):
    BLAS's own threads on L-BFGS's vector updates cost more than they gain, and fits side by side
    keep the cores busy instead. The same coefficients as one fit after another (BLAS's thread
    count changes their sums by about 1e-13; README "Hyperparameter search"). Ctrl-C or SIGTERM
    does not wait for a fit still running: joblib's threads are daemons, left to end with the
    command (BLAS's thread count is restored under them; nothing reads their results).
    """
    from joblib import cpu_count
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils.parallel import Parallel, delayed
    from threadpoolctl import threadpool_limits

    def fit_one(c: float, x: Any, y: Any) -> Any:
        # L-BFGS at tol 1e-4 (scikit-learn's defaults, pinned: its early stop is part of the yardstick;
        # a solver that reaches the optimum scores lower on validation, README "Hyperparameter search")
        return LogisticRegression(C=c, solver="lbfgs", tol=1e-4, max_iter=2000).fit(x, y)

    with threadpool_limits(limits=1, user_api="blas"):
        return Parallel(n_jobs=max(1, min(len(jobs), cpu_count())), backend="threading")(delayed(fit_one)(*job) for job in jobs)
