"""Load -> dedupe -> split -> TextVectorization (train split only) -> tf.data.

One way through: :func:`load_splits` gives train/val/test texts with string labels,
:func:`build_vectorizer` adapts on the train texts alone, and :func:`make_datasets` turns the
splits into batched ``tf.data`` pipelines of padded token ids.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline import limits, readers
from pipeline.errors import ConfigError, DataError, shown

log = logging.getLogger(__name__)

SOURCES = ("files", "bbc_news", "imdb")


@dataclass
class Split:
    texts: List[str]
    labels: List[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    #: Class names; a label's index here is its integer id.
    classes: List[str]
    #: Duplicate texts dropped before splitting.
    duplicates_removed: int = 0

    def items(self) -> List[Tuple[str, Split]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    def label_ids(self, split: Split) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[label] for label in split.labels], dtype="int32")

    def fingerprint(self) -> Dict[str, str]:
        """A sha256 per split and overall, over texts and labels in order."""
        digests = {}
        for name, split in self.items():
            h = hashlib.sha256()
            for text, label in zip(split.texts, split.labels):
                h.update(label.encode() + b"\t" + text.encode() + b"\n")
            digests[name] = h.hexdigest()
        digests["all"] = hashlib.sha256("".join(digests[n] for n, _ in self.items()).encode()).hexdigest()
        return digests


def _dedupe(texts: List[str], labels: List[str], exclude: frozenset = frozenset()) -> Tuple[Split, int]:
    """Keep the first occurrence of each stripped text, and none that are in ``exclude``."""
    seen = set(exclude)
    out = Split([], [])
    for text, label in zip(texts, labels):
        key = text.strip()
        if not key or key in seen:
            continue
        seen.add(key)
        out.texts.append(key)
        out.labels.append(label)
    return out, len(texts) - len(out)


def _split_off(split: Split, size: float, seed: int, what: str) -> Tuple[Split, Split]:
    """Stratified (rest, held_out) with ``size`` of the texts held out."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < size < 1.0:
        raise ConfigError(f"dataset.{what}_size must be between 0 and 1, got {size}")
    try:
        a_t, b_t, a_l, b_l = train_test_split(
            split.texts, split.labels, test_size=size, random_state=seed, stratify=split.labels
        )
    except ValueError as e:
        counts = ", ".join(f"{shown(k)}: {v}" for k, v in sorted(Counter(split.labels).items()))
        raise DataError(f"cannot split {len(split)} texts ({counts}) for a stratified {what} split: {e}") from None
    return Split(list(a_t), list(a_l)), Split(list(b_t), list(b_l))


def _subsample(split: Split, n: int, seed: int) -> Split:
    if n >= len(split):
        return split
    rest, kept = _split_off(split, n / len(split), seed, "max_samples")
    return kept


def _sort_classes(labels: List[str]) -> List[str]:
    unique = set(labels)
    if all(readers.whole_number(label) is not None for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _read_sources(ds: Any) -> Tuple[Split, Optional[Split], Optional[Split]]:
    if ds.source not in SOURCES:
        raise ConfigError(f"unknown dataset.source {ds.source!r}; choose one of {', '.join(SOURCES)}")
    if ds.source == "bbc_news":
        return Split(*readers.read_bbc_news()), None, None
    if ds.source == "imdb":
        train, test = readers.read_imdb(ds.cache_dir, ds.url)
        return Split(*train), None, Split(*test)
    if ds.class_files:
        main = Split(*readers.read_class_files(ds.class_files, ds.encoding))
    elif ds.path:
        main = Split(*readers.read_file(ds.path, ds))
    else:
        raise ConfigError("dataset=files needs dataset.path=<file> (or dataset.class_files)")
    val = Split(*readers.read_file(ds.val_path, ds, held_out=True)) if ds.val_path else None
    test = Split(*readers.read_file(ds.test_path, ds, held_out=True)) if ds.test_path else None
    return main, val, test


def split_seed(ds: Any, seed: int) -> int:
    """The seed that divides the labelled texts (the split, and a search's folds of train+validation):
    ``dataset.split_seed``, else ``seed`` (the run's)."""
    given = getattr(ds, "split_seed", None)
    return int(seed) if given is None else int(given)


def load_splits(ds: Any, seed: int) -> Splits:
    """Read the dataset, drop duplicate texts, and split it (seeded, stratified) as configured.

    The split's seed is ``dataset.split_seed``, else ``seed`` (the run's). Exact duplicates are
    removed before splitting, and a text in the test (or validation) file is removed from the
    splits before it, so no text is ever in two splits.
    """
    limits.split_sizes(ds)  # checked before reading, and as given (not rescaled)
    seed = split_seed(ds, seed)
    main, val, test = _read_sources(ds)
    removed = 0
    if test is not None:
        test, n = _dedupe(test.texts, test.labels)
        removed += n
    held = frozenset(test.texts) if test is not None else frozenset()
    if val is not None:
        val, n = _dedupe(val.texts, val.labels, held)
        removed += n
        if not val.texts:  # every one of them empty, repeated or in the test file
            raise DataError("no texts left for validation after removing empty and duplicate texts "
                            "and those in the test file (dataset.val_path)")
        held = held | frozenset(val.texts)
    main, n = _dedupe(main.texts, main.labels, held)
    removed += n
    if not main.texts:
        raise DataError("no texts left for training after removing empty and duplicate texts")

    if ds.max_samples is not None:
        total = len(main) + len(val or []) + len(test or [])
        if ds.max_samples < total:
            frac = ds.max_samples / total
            main = _subsample(main, max(1, round(len(main) * frac)), seed)
            val = _subsample(val, max(1, round(len(val) * frac)), seed) if val is not None else None
            test = _subsample(test, max(1, round(len(test) * frac)), seed) if test is not None else None

    if len(set(main.labels)) < 2:
        raise DataError(f"only one class ({main.labels[0]!r}) in the training data; need at least two")
    # val_size and test_size are shares of everything read as the main corpus
    left = 1.0
    if test is None:
        main, test = _split_off(main, ds.test_size, seed, "test")
        left -= ds.test_size
    if val is None:
        main, val = _split_off(main, ds.val_size / left, seed, "val")
    classes = _sort_classes(main.labels)
    for name, split in (("validation", val), ("test", test)):
        unseen = sorted(set(split.labels) - set(classes))
        if unseen:
            raise DataError(f"{name} labels never seen in training: {', '.join(shown(u) for u in unseen[:5])}")
    return Splits(main, val, test, classes, removed)


def sequence_length(ds: Any, train_texts: List[str]) -> int:
    """The padded length: a fixed integer, or ``auto`` = a percentile of train lengths, capped."""
    fixed = limits.sequence_settings(ds)
    if fixed is not None:
        return fixed
    lengths = [len(t.split()) for t in train_texts]
    return int(max(1, min(ds.max_sequence_length, np.ceil(np.percentile(lengths, ds.length_percentile)))))


def _standardize(ds: Any) -> Any:
    """TextVectorization's ``standardize`` for ``dataset.lowercase`` / ``strip_punctuation`` /
    ``split_punctuation`` (stripping wins over splitting)."""
    from pipeline.pyfunc_model import lower_and_split_punctuation, split_punctuation

    lower, strip = bool(ds.lowercase), bool(ds.strip_punctuation)
    if not strip and bool(ds.split_punctuation):
        return lower_and_split_punctuation if lower else split_punctuation
    return {
        (True, True): "lower_and_strip_punctuation",
        (True, False): "lower",
        (False, True): "strip_punctuation",
        (False, False): None,
    }[(lower, strip)]


def build_vectorizer(ds: Any, train_texts: List[str]) -> Any:
    """A Keras TextVectorization layer adapted on the training texts only."""
    import keras

    if ds.vocab_size < 3:
        raise ConfigError(f"dataset.vocab_size must be at least 3, got {ds.vocab_size}")
    settings = dict(max_tokens=ds.vocab_size, standardize=_standardize(ds), output_mode="int",
                    output_sequence_length=sequence_length(ds, train_texts), name="vectorizer")
    adapted = keras.layers.TextVectorization(**settings)
    adapted.adapt(np.array(train_texts, dtype=object), batch_size=1024)
    # The same vocabulary, given to the constructor: Keras saves it in the layer's config then.
    # An adapted vocabulary is saved as the lines of a text file and read back with splitlines(),
    # which also breaks lines at \x1c-\x1e, \x85, \u2028 and \u2029: a token holding one (MR's
    # latin-1 reviews have \x85) came back as two, and the saved model could not be loaded.
    # numpy drops a string's trailing NULs, so a token ending in \x00 comes back as another token (or
    # as the padding ''): the first of each string is kept, and such a token reads as [UNK]
    vocabulary = list(dict.fromkeys(str(token) for token in adapted.get_vocabulary()))
    if len(vocabulary) <= 2:  # padding and [UNK] only: nothing to learn from, and a model Keras cannot load
        raise DataError(f"the {len(train_texts)} training texts have no word left after standardisation "
                        "(dataset.lowercase / strip_punctuation / split_punctuation): nothing to train on")
    return keras.layers.TextVectorization(**settings, vocabulary=vocabulary)


def vectorize(vectorizer: Any, texts: List[str], batch_size: int = 4096) -> np.ndarray:
    """Token ids for ``texts``, padded/truncated to the vectorizer's length."""
    out = [
        np.asarray(vectorizer(np.array(texts[i : i + batch_size], dtype=object)))
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(out).astype("int32")


#: Length buckets for the training batches: boundaries at these quantiles of the train lengths.
BUCKET_QUANTILES = tuple(range(10, 100, 10))


def token_lengths(ids: np.ndarray) -> np.ndarray:
    """Real tokens per row (TextVectorization pads with 0 at the end), at least 1."""
    return np.maximum(np.count_nonzero(ids, axis=1), 1).astype("int32")


def bucket_boundaries(lengths: np.ndarray) -> List[int]:
    """Length boundaries that split the training texts into about ten equal buckets."""
    cuts = np.percentile(lengths, BUCKET_QUANTILES, method="higher").astype(int) + 1
    return sorted({int(c) for c in cuts if 1 < c <= int(lengths.max())})


def _trim(x: Any, y: Any) -> Tuple[Any, Any]:
    """Cut a batch's trailing padding: pad to the batch's own longest text."""
    import tensorflow as tf

    longest = tf.maximum(tf.reduce_max(tf.math.count_nonzero(x, axis=1, dtype=tf.int32)), 1)
    return x[:, :longest], y


def make_datasets(
    encoded: Dict[str, Tuple[np.ndarray, np.ndarray]], batch_size: int, seed: int, bucket_by_length: bool = True
) -> Dict[str, Any]:
    """Fresh batched tf.data pipelines of (token ids, label id); train shuffled with ``seed``.

    Built anew for every fit, so the batches a model sees depend only on the seed. Every
    batch is padded only to its own longest text; with ``bucket_by_length`` the training
    batches are also drawn from buckets of similar length (reshuffled each epoch), so little
    of the LSTM's work is spent on padding. The number of batches per epoch is fixed by the
    data (the sum over buckets of ceil(size / batch_size)), whatever the shuffle.
    """
    import tensorflow as tf

    # tf.data's autotuning optimizer ran beside training and, when each epoch's iterator was
    # destroyed, held it up to a second: 1.6 s epochs took 2.1-2.6 s (SST-2, 2 cores). A fixed
    # prefetch of two batches keeps the input ahead of the model without it.
    options = tf.data.Options()
    options.autotune.enabled = False
    out = {}
    for name, (ids, labels) in encoded.items():
        if name == "train" and bucket_by_length:
            lengths = token_lengths(ids)
            bounds = bucket_boundaries(lengths)
            sizes = np.bincount(np.searchsorted(bounds, lengths, side="right"), minlength=len(bounds) + 1)
            batches = int(sum(-(-int(n) // batch_size) for n in sizes))
            ds = tf.data.Dataset.from_tensor_slices((ids, labels, lengths))
            ds = ds.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
            ds = ds.map(lambda x, y, n: (x[:n], y))
            ds = ds.bucket_by_sequence_length(
                lambda x, y: tf.shape(x)[0], bounds, [batch_size] * (len(bounds) + 1)
            )
            ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
        else:
            ds = tf.data.Dataset.from_tensor_slices((ids, labels))
            if name == "train":
                ds = ds.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
            ds = ds.batch(batch_size).map(_trim)
        out[name] = ds.prefetch(2).with_options(options)
    return out
