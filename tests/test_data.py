"""Splits a researcher can trust: deduplicated, disjoint, stratified, seeded; vocabulary from train only."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import DATA_DIR, write_sentiment_csv
from pipeline import data
from pipeline.errors import ConfigError, DataError

needs_shared_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"public datasets not at {DATA_DIR}")


def _all_texts(splits: data.Splits) -> list:
    return splits.train.texts + splits.val.texts + splits.test.texts


def test_duplicates_are_removed_before_splitting(tmp_path: Path, make_cfg) -> None:
    f = write_sentiment_csv(tmp_path / "d.csv", n=100)
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines + lines[1:21]) + "\n")  # 20 exact duplicates
    cfg = make_cfg("dataset=files", f"dataset.path={f}")
    splits = data.load_splits(cfg.dataset, seed=0)
    texts = _all_texts(splits)
    assert splits.duplicates_removed == 20
    assert len(texts) == len(set(texts)) == 100


def test_a_test_file_text_never_appears_in_training(tmp_path: Path, make_cfg) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", n=100)
    test = tmp_path / "test.csv"
    test.write_text("text,label\n" + "\n".join(train.read_text().splitlines()[1:11]) + "\n")
    cfg = make_cfg("dataset=files", f"dataset.path={train}", f"dataset.test_path={test}")
    splits = data.load_splits(cfg.dataset, seed=0)
    assert len(splits.test) == 10
    assert not set(splits.test.texts) & set(splits.train.texts + splits.val.texts)
    assert len(splits.train) + len(splits.val) == 90


def test_splits_are_stratified_and_seeded(tmp_path: Path, make_cfg) -> None:
    f = tmp_path / "imbalanced.csv"
    rows = [f"text {i} here,{'rare' if i % 5 == 0 else 'common'}" for i in range(500)]
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    cfg = make_cfg("dataset=files", f"dataset.path={f}")
    a = data.load_splits(cfg.dataset, seed=1)
    b = data.load_splits(cfg.dataset, seed=1)
    c = data.load_splits(cfg.dataset, seed=2)
    assert a.test.texts == b.test.texts and a.fingerprint() == b.fingerprint()
    assert a.test.texts != c.test.texts and a.fingerprint()["all"] != c.fingerprint()["all"]
    assert (len(a.train), len(a.val), len(a.test)) == (400, 50, 50)
    for split in (a.train, a.val, a.test):
        assert Counter(split.labels)["rare"] / len(split) == pytest.approx(0.2, abs=0.01)


def test_a_fixed_split_seed_keeps_the_split_whatever_the_run_s_seed(tmp_path: Path, make_cfg) -> None:
    f = write_sentiment_csv(tmp_path / "d.csv", n=200)
    cfg = make_cfg("dataset=files", f"dataset.path={f}", "dataset.max_samples=150", "dataset.split_seed=7")
    a, b = data.load_splits(cfg.dataset, seed=1), data.load_splits(cfg.dataset, seed=2)
    for name in ("train", "val", "test"):  # `-m seed=1,2` scores both runs on the same test texts
        assert getattr(a, name).texts == getattr(b, name).texts
    assert a.fingerprint() == b.fingerprint()
    unset = make_cfg("dataset=files", f"dataset.path={f}", "dataset.max_samples=150")
    assert data.load_splits(unset.dataset, seed=7).fingerprint() == a.fingerprint()  # null: the run's seed
    assert data.load_splits(unset.dataset, seed=1).test.texts != a.test.texts


def test_max_samples_keeps_classes_balanced(make_cfg) -> None:
    cfg = make_cfg("dataset.max_samples=250")
    splits = data.load_splits(cfg.dataset, seed=0)
    assert len(_all_texts(splits)) == pytest.approx(250, abs=2)
    assert len(set(splits.test.labels)) == 5


def test_one_class_is_refused(tmp_path: Path, make_cfg) -> None:
    f = tmp_path / "one.csv"
    f.write_text("text,label\n" + "\n".join(f"text {i},only" for i in range(30)) + "\n")
    with pytest.raises(DataError, match="only one class"):
        data.load_splits(make_cfg("dataset=files", f"dataset.path={f}").dataset, seed=0)


def test_labels_only_in_the_test_file_are_refused(tmp_path: Path, make_cfg) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", n=60)
    test = tmp_path / "test.csv"
    test.write_text("text,label\nsomething new,neutral\n")
    with pytest.raises(DataError, match="test labels never seen in training: neutral"):
        data.load_splits(make_cfg("dataset=files", f"dataset.path={train}", f"dataset.test_path={test}").dataset, 0)


def test_a_validation_file_left_empty_by_the_test_file_is_refused(tmp_path: Path, make_cfg) -> None:
    """The same file as dataset.val_path and dataset.test_path: each validation text is the test
    file's, so none is left (once an empty validation split, and a traceback from the encoder)."""
    train = write_sentiment_csv(tmp_path / "train.csv", n=60)
    held = tmp_path / "held.csv"
    held.write_text("text,label\na fine film,pos\na dull film,neg\n")
    cfg = make_cfg("dataset=files", f"dataset.path={train}", f"dataset.val_path={held}", f"dataset.test_path={held}")
    with pytest.raises(DataError, match="no texts left for validation .* in the test file"):
        data.load_splits(cfg.dataset, 0)


def test_sequence_length_auto_is_a_capped_percentile(make_cfg) -> None:
    texts = [" ".join(["w"] * n) for n in range(1, 101)]
    cfg = make_cfg("dataset.sequence_length=auto", "dataset.length_percentile=90", "dataset.max_sequence_length=500")
    assert data.sequence_length(cfg.dataset, texts) == 91
    cfg = make_cfg("dataset.sequence_length=auto", "dataset.max_sequence_length=40")
    assert data.sequence_length(cfg.dataset, texts) == 40
    assert data.sequence_length(make_cfg("dataset.sequence_length=17").dataset, texts) == 17
    with pytest.raises(ConfigError, match="positive integer or auto"):
        data.sequence_length(make_cfg("dataset.sequence_length=long").dataset, texts)


def test_vocabulary_comes_from_the_training_split_only(tmp_path: Path, make_cfg) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", n=80)
    test = tmp_path / "test.csv"
    test.write_text("text,label\nzyzzyva quokka good,positive\nbad film,negative\n")
    cfg = make_cfg("dataset=files", f"dataset.path={train}", f"dataset.test_path={test}")
    splits = data.load_splits(cfg.dataset, seed=0)
    vectorizer = data.build_vectorizer(cfg.dataset, splits.train.texts)
    vocabulary = vectorizer.get_vocabulary()
    assert "zyzzyva" not in vocabulary and "good" in vocabulary
    ids = data.vectorize(vectorizer, ["zyzzyva good"])
    assert ids[0, 0] == 1  # [UNK]
    assert ids[0, 1] == vocabulary.index("good")
    assert ids.shape[1] == vectorizer.get_config()["output_sequence_length"]


def test_datasets_batch_ids_with_integer_labels(tmp_path: Path, make_cfg) -> None:
    f = write_sentiment_csv(tmp_path / "d.csv", n=100)
    cfg = make_cfg("dataset=files", f"dataset.path={f}")
    splits = data.load_splits(cfg.dataset, seed=0)
    vectorizer = data.build_vectorizer(cfg.dataset, splits.train.texts)
    encoded = {name: (data.vectorize(vectorizer, s.texts), splits.label_ids(s)) for name, s in splits.items()}
    datasets = data.make_datasets(encoded, batch_size=16, seed=0)
    x, y = next(iter(datasets["train"]))
    assert x.shape[0] <= 16 and x.dtype.name == "int32"
    assert set(np.unique(y.numpy())) <= {0, 1}
    assert sum(int(b[1].shape[0]) for b in datasets["train"]) == len(splits.train)
    assert sum(int(b[1].shape[0]) for b in datasets["test"]) == len(splits.test)


def _ragged_ids(n: int, longest: int, seed: int = 0) -> np.ndarray:
    """Post-padded token ids of random lengths 1..longest, each row's tokens unique to it."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, longest), dtype="int32")
    for i, length in enumerate(rng.integers(1, longest + 1, size=n)):
        ids[i, :length] = 2 + (i * longest + np.arange(length)) % 50_000
    return ids


def _rows(batches) -> list:
    return [tuple(int(t) for t in row if t) + (int(label),) for x, y in batches for row, label in zip(x.numpy(), y.numpy())]


def test_training_batches_are_bucketed_by_length_and_padded_to_their_own_longest() -> None:
    ids = _ragged_ids(500, longest=40)
    labels = np.arange(500, dtype="int32") % 2
    train = data.make_datasets({"train": (ids, labels)}, batch_size=32, seed=3)["train"]
    epochs = [list(train), list(train)]
    for batches in epochs:
        # every text exactly once per epoch, none cut short
        assert sorted(_rows(batches)) == sorted(_rows([(_t(ids), _t(labels))]))
        assert len(batches) == int(train.cardinality())
        for x, _ in batches:
            real = np.count_nonzero(x.numpy(), axis=1)
            assert x.shape[1] == real.max()  # no column of padding only
        # similar lengths together: far less padding than random batches of the same size
        padded = sum(int(np.prod(x.shape)) for x, _ in batches)
        assert np.count_nonzero(ids) / padded > 0.85
    assert _rows(epochs[0]) != _rows(epochs[1])  # reshuffled every epoch
    again = data.make_datasets({"train": (ids, labels)}, batch_size=32, seed=3)["train"]
    assert _rows(list(again)) == _rows(epochs[0])  # the same seed, the same batches


def test_unbucketed_and_evaluation_batches_keep_order_and_trim_padding() -> None:
    ids = _ragged_ids(100, longest=30)
    ids[:, 25:] = 0
    labels = np.zeros(100, dtype="int32")
    out = data.make_datasets({"train": (ids, labels), "val": (ids, labels)}, batch_size=16, seed=0, bucket_by_length=False)
    val = list(out["val"])
    assert _rows(val) == _rows([(_t(ids), _t(labels))])  # in order
    assert all(x.shape[1] == np.count_nonzero(x.numpy(), axis=1).max() <= 25 for x, _ in val)
    assert sorted(_rows(out["train"])) == sorted(_rows(val))


def _t(a: np.ndarray):
    import tensorflow as tf

    return tf.constant(a)


@needs_shared_data
@pytest.mark.parametrize(
    "name, total, classes",
    [("sst2", 6920 + 872 + 1821, ["0", "1"]), ("mr", 10662, ["negative", "positive"]), ("subj", 10000, ["0", "1"])],
)
def test_public_dataset_configs_read_the_published_counts(make_cfg, name, total, classes) -> None:
    splits = data.load_splits(make_cfg(f"dataset={name}").dataset, seed=0)
    assert splits.classes == classes
    # published sizes, less the exact duplicates (SST-2 repeats 11 sentences across its files)
    assert len(_all_texts(splits)) + splits.duplicates_removed == total
    assert len(set(_all_texts(splits))) == len(_all_texts(splits))


@pytest.mark.parametrize(
    "overrides, tokens",
    [
        ([], ["shares", "rose", "5", "to", "£1000", "wow"]),  # lower-cased, ASCII punctuation stripped
        (["dataset.strip_punctuation=false"], ["shares", "rose", "5%", "to", "£1,000!", "wow!!"]),  # attached
        (["dataset.strip_punctuation=false", "dataset.split_punctuation=true"],
         ["shares", "rose", "5", "%", "to", "£", "1", ",", "000", "!", "wow", "!", "!"]),
        (["dataset.strip_punctuation=false", "dataset.split_punctuation=true", "dataset.lowercase=false"],
         ["Shares", "rose", "5", "%", "to", "£", "1", ",", "000", "!", "WOW", "!", "!"]),
    ],
)
def test_punctuation_is_stripped_kept_or_split_into_tokens(make_cfg, overrides, tokens) -> None:
    """``$``, ``£``, ``!`` and ``?`` carry signal in reviews, questions and spam: split_punctuation
    keeps each as a token of its own, where stripping drops it and keeping glues it to a word."""
    cfg = make_cfg("dataset.sequence_length=20", *overrides)
    text = "Shares rose 5% to £1,000! WOW!!"
    vectorizer = data.build_vectorizer(cfg.dataset, [text])
    vocabulary = vectorizer.get_vocabulary()
    ids = np.asarray(vectorizer(np.array([text], dtype=object)))[0]
    assert [vocabulary[i] for i in ids if i] == tokens


#: A word of any characters a decoded file can hold (every Unicode category but lone surrogates,
#: which no codec decodes to), the line boundaries Python's splitlines() knows (\x1c-\x1e, \x85,
#: \u2028, \u2029, which TensorFlow's whitespace split does not) and NUL planted.
WORD = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(["\x00", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])), min_size=1, max_size=8)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.lists(WORD, min_size=1, max_size=4).map(" ".join), min_size=1, max_size=6))
@example(texts=["and\x85of fun", "film\u2028here", "x\x1cy"])  # MR's reviews (latin-1) have \x85
@example(texts=["\x00", "good\x00 good film"])  # a NUL at a word's end
def test_a_saved_vectorizer_loads_with_the_vocabulary_it_was_adapted_to(make_cfg, tmp_path: Path, texts) -> None:
    """Whatever the training texts hold, the end-to-end model that is saved loads and reads them
    as it did (Keras reads an adapted vocabulary back by splitlines(): a token holding a line
    boundary came back as two, and the model could not be loaded)."""
    import keras

    cfg = make_cfg("dataset.sequence_length=6", "dataset.lowercase=false", "dataset.strip_punctuation=false")
    words = {w.rstrip("\x00") for t in texts for w in re.split(r"[ \t\n\v\f\r]+", t)} - {"", "[UNK]"}
    if not words:
        # no word (TensorFlow splits at ASCII whitespace only; numpy drops a trailing NUL, so "\x00"
        # is no word and "a\x00" reads as [UNK]): refused in one line, before any run
        with pytest.raises(DataError, match="no word left after standardisation"):
            data.build_vectorizer(cfg.dataset, texts)
        return
    vectorizer = data.build_vectorizer(cfg.dataset, texts)
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, vectorizer(text))
    path = tmp_path / "vectorizer.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[-1].get_vocabulary() == vectorizer.get_vocabulary()
    batch = np.array(texts, dtype=object)
    np.testing.assert_array_equal(np.asarray(loaded(batch)), np.asarray(model(batch)))
