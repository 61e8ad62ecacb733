"""The TF-IDF + logistic regression baseline: fit on train, C chosen on validation, tested once."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import write_sentiment_csv
from pipeline import baseline
from pipeline.data import Split, Splits
from pipeline.errors import DataError

SETTINGS = OmegaConf.create({"enabled": True, "C": [0.01, 1.0, 100.0], "word_ngrams": [1, 2], "char_ngrams": [2, 4], "min_df": 1})


def _splits(test_labels_flipped: bool) -> Splits:
    import random

    rng = random.Random(0)
    cues = {"pos": ["good", "great", "lovely"], "neg": ["bad", "awful", "dull"]}

    def split(n: int, flip: bool = False) -> Split:
        texts, labels = [], []
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            texts.append(f"the film was {rng.choice(cues[label])} and {rng.choice(['long', 'short'])} #{i}")
            labels.append(({"pos": "neg", "neg": "pos"}[label]) if flip else label)
        return Split(texts, labels)

    return Splits(split(60), split(20), split(20, flip=test_labels_flipped), ["neg", "pos"])


def test_the_test_split_never_chooses_anything() -> None:
    honest, flipped = baseline.fit(_splits(False), SETTINGS), baseline.fit(_splits(True), SETTINGS)
    assert honest.val_accuracy == flipped.val_accuracy == 1.0
    assert honest.C == flipped.C == 0.01, "the smallest C among the best on validation, whatever the test split holds"
    assert honest.test["accuracy"] == 1.0 and flipped.test["accuracy"] == 0.0
    assert set(honest.metrics()) >= {"baseline.val_accuracy", "baseline.test_accuracy", "baseline.test_f1_macro",
                                     "baseline.test_mcc", "baseline.test_roc_auc"}


def test_the_logged_baseline_is_the_fit_with_the_chosen_C() -> None:
    """The model kept (and logged) is the fit with the C chosen on validation."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    splits = _splits(False)
    fitted = baseline.fit(splits, SETTINGS)
    features, classifier = fitted.model[0], fitted.model[-1]
    alone = LogisticRegression(C=fitted.C, max_iter=2000).fit(features.transform(splits.train.texts), splits.label_ids(splits.train))
    assert classifier.C == fitted.C == 0.01
    np.testing.assert_allclose(classifier.coef_, alone.coef_, rtol=1e-6)


def test_the_test_split_is_read_once_to_score_the_chosen_model() -> None:
    class Counted(list):
        reads = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            Counted.reads += 1
            return super().__iter__()

    splits = _splits(False)
    splits.test = Split(Counted(splits.test.texts), splits.test.labels)
    baseline.fit(splits, SETTINGS)
    assert Counted.reads == 1


def test_a_training_split_without_any_ngram_is_one_line() -> None:
    splits = _splits(False)
    splits.train = Split([" "] * 4, ["neg", "pos"] * 2)
    with pytest.raises(DataError, match="baseline cannot be fit.*baseline.enabled=false"):
        baseline.fit(splits, SETTINGS)


def test_a_train_run_logs_the_baseline_it_was_scored_with(tmp_path: Path, make_cfg, store_uri: str) -> None:
    """The logged model scores the logged test accuracy on the run's own test split."""
    import skops.io
    from mlflow import MlflowClient

    from pipeline import experiment, train

    csv = write_sentiment_csv(tmp_path / "reviews.csv")
    cfg = make_cfg("dataset=files", f"dataset.path={csv}", "tracking.log_model=false", "baseline.enabled=true")
    run_id, _ = train.train_and_record(cfg)
    run = MlflowClient(store_uri).get_run(run_id)
    path = MlflowClient(store_uri).download_artifacts(run_id, "baseline/model.skops", str(tmp_path))
    model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    # deflated: skops's state is indented JSON, and its arrays .npy files
    assert {i.compress_type for i in zipfile.ZipFile(path).infolist()} == {zipfile.ZIP_DEFLATED}
    splits = experiment.prepare(cfg).splits
    probs = baseline.probabilities(model, splits.test.texts, len(splits.classes))
    accuracy = float((probs.argmax(axis=1) == splits.label_ids(splits.test)).mean())
    assert run.data.metrics["baseline.test_accuracy"] == pytest.approx(accuracy)
    assert run.data.metrics["baseline.C"] in SETTINGS.C or run.data.metrics["baseline.C"] in cfg.baseline.C


# Any character (lone surrogates too), with every character Python splits words at and a few letters
# drawn often enough that texts share words and n-grams.
_CHARACTERS = st.one_of(st.characters(codec=None, categories=None), st.sampled_from([chr(c) for c in range(0x110000) if chr(c).isspace()]),
                        st.sampled_from("aAbB\u0130\u00df"))
_TEXTS = st.lists(st.text(_CHARACTERS, max_size=30), max_size=8)


@settings(max_examples=200, deadline=None)
@given(train=_TEXTS, other=_TEXTS, ngrams=st.sampled_from([(1, 1), (2, 5), (1, 3), (3, 3)]), min_df=st.integers(1, 3))
@example(train=["ab  ab\tcd", "AB\u2028cd x", "x"], other=["\u0130b", "", " \x1c "], ngrams=(2, 5), min_df=2)
@example(train=["", " "], other=["a"], ngrams=(2, 5), min_df=1)
@example(train=["ab", "ab"], other=["", "\x85"], ngrams=(2, 5), min_df=2)
def test_the_character_n_grams_are_scikit_learns(train: list, other: list, ngrams: tuple, min_df: int) -> None:
    """The character n-grams counted once per word are scikit-learn's ``char_wb`` TF-IDF: the same
    vocabulary, the same numbers (to the rounding of a row's norm) for the training texts, and to the
    last bit for any other texts, through the fitted features and the vectorizer logged in the model;
    and where scikit-learn cannot fit (no word, no n-gram in min_df texts), neither can they."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=ngrams, sublinear_tf=True, min_df=min_df)
    ours = baseline._CharNgrams(ngrams, min_df)
    try:
        expected = reference.fit_transform(train)
    except ValueError:
        with pytest.raises(ValueError):
            ours.fit_transform(train)
        return
    got = ours.fit_transform(train)
    assert ours.vectorizer().vocabulary_ == reference.vocabulary_
    np.testing.assert_allclose(got.toarray(), expected.toarray(), rtol=0, atol=1e-15)
    try:
        expected = reference.transform(other)
    except ValueError:  # no texts
        for transform in (ours.transform, ours.vectorizer().transform):
            with pytest.raises(ValueError):
                transform(other)
        return
    for features in (ours.transform(other), ours.vectorizer().transform(other)):
        assert features.shape == expected.shape and (features != expected).nnz == 0
        for part in ("indptr", "indices", "data"):  # each row's columns in the same order: its norm summed alike
            np.testing.assert_array_equal(getattr(features, part), getattr(expected, part))


@pytest.mark.parametrize("odd", ["caf\u00e9 \U0001F600 na\u00efve", "ends in a NUL x\x00 and more", "one token " + "z" * 20_000])
def test_the_stored_baseline_predicts_as_the_fitted_one(tmp_path: Path, odd: str) -> None:
    """Written with skops and read back, the logged form of the baseline gives the fitted one's
    probabilities, also for texts of any characters (a NUL at a term's end, which NumPy's strings
    drop, or a term so long that the array would be mostly padding, keeps the vocabulary as it was);
    its file does not grow by a JSON entry per n-gram."""
    import numpy as np
    import skops.io

    splits = _splits(False)
    many = " ".join(f"w{i}" for i in range(3000))  # thousands of n-grams
    splits.train = Split([*splits.train.texts[:-1], f"{splits.train.texts[-1]} {odd} {many}"], splits.train.labels)
    fitted = baseline.fit(splits, SETTINGS)
    stored = baseline.stored(fitted.model)
    path = tmp_path / "model.skops"
    skops.io.dump(stored, path)
    model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    texts = [*splits.test.texts, odd, "\x00", "unseen words only"]
    np.testing.assert_array_equal(model.predict_proba(texts), fitted.model.predict_proba(texts))
    terms = sum(len(vectorizer.vocabulary_) for _, vectorizer in fitted.model[0].transformer_list)
    schema = len(zipfile.ZipFile(path).read("schema.json"))
    if "\x00" in odd or "z" * 20_000 in odd:
        assert stored is fitted.model
    else:
        assert terms > 10_000 and schema < 10 * terms, f"schema.json {schema} bytes for {terms} n-grams"
    assert hasattr(fitted.model[0].transformer_list[0][1], "vocabulary_"), "the fitted model itself is left as it was"


def test_the_fits_side_by_side_are_the_fits_one_after_another() -> None:
    """One fit per (C, data) in threads: each model as fitted alone, in the jobs' order (a shuffled
    order would pair a C with another's data or score), and BLAS's threads as they were."""
    import numpy as np
    import scipy.sparse
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(1)  # noise: each C fits its own model and scores its own accuracy
    x_train, x_val = (scipy.sparse.random(n, 40, density=0.3, format="csr", random_state=rng) for n in (80, 40))
    y_train, y_val = rng.integers(0, 3, 80), rng.integers(0, 3, 40)
    grid = [0.01, 0.03, 1.0, 100.0]
    before = [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]
    jobs = [(c, x_train[: 40 + 10 * i], y_train[: 40 + 10 * i]) for i, c in enumerate(grid)]
    fits = baseline.logistic_fits(jobs)
    assert [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()] == before
    scores = []
    for (c, x, y), classifier in zip(jobs, fits):
        alone = LogisticRegression(C=c, solver="lbfgs", tol=1e-4, max_iter=2000).fit(x, y)
        assert classifier.C == c
        np.testing.assert_allclose(classifier.coef_, alone.coef_, rtol=1e-9, atol=1e-12)
        assert (classifier.predict(x_val) == alone.predict(x_val)).all()
        scores.append(float((classifier.predict(x_val) == y_val).mean()))
    assert len(set(scores)) > 1, "the check above tells the fits apart"


def test_ctrl_c_during_the_fits_does_not_wait_for_them(tmp_path: Path) -> None:
    """Fits still running in their threads (here ones that would take a minute) do not hold up Ctrl-C."""
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time

    script = tmp_path / "slow_fits.py"
    script.write_text(
        "import faulthandler, os, signal, sys, threading, time\n"
        "faulthandler.register(signal.SIGUSR1)  # its threads' stacks, should it not exit\n"
        "import joblib\n"
        "import numpy as np\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from pipeline import baseline\n"
        "def slow(self, x, y):\n"
        "    where = 'the main thread' if threading.current_thread() is threading.main_thread() else 'a thread'\n"
        "    os.write(1, f'fit in {where}\\n'.encode())  # one write a line: the two threads' lines do not mix\n"
        "    time.sleep(60)\n"
        "LogisticRegression.fit = slow\n"
        "joblib.cpu_count = lambda: 2  # two threads, one fit in each, whatever the machine has\n"
        "# Ctrl-C as a terminal delivers it, whatever this process inherited: in the full suite a child\n"
        "# started here sometimes never saw SIGINT (its main thread in joblib's 10 ms wait loop)\n"
        "print('inherited:', signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []), file=sys.stderr, flush=True)\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])\n"
        "try:\n"
        "    baseline.logistic_fits([(c, np.zeros((4, 2)), np.array([0, 1, 0, 1])) for c in (1.0, 10.0)])\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n")
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
        started = []
        try:
            while len(started) < 2:
                started.append(lines.get(timeout=60))
        except queue.Empty:
            pass
        assert started == ["fit in a thread"] * 2, process.stderr.read() if process.poll() is not None else started
        start = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            process.kill()
            pytest.fail(f"still running 40 s after Ctrl-C; its threads:\n{process.communicate()[1][-6000:]}")
        assert process.returncode == 130
        assert time.monotonic() - start < 20, "Ctrl-C waited for the fits to end"
    finally:
        process.kill()
        process.wait()
