"""Distillation from the linear baseline (``training.distill``): the teacher is fit on the texts a
model trains on and nothing else, out of fold; the fit validates and reports against the label."""

from __future__ import annotations

import random
from pathlib import Path
from typing import List

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import SHRINK, assert_one_line_error, run_cli, runs_in, write_sentiment_csv
from pipeline import baseline, distill, experiment

SETTINGS = OmegaConf.create({"C": [1.0, 100.0], "word_ngrams": [1, 2], "char_ngrams": [2, 4], "min_df": 1})


def _words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3)) for _ in range(n))


def test_the_teacher_never_repeats_a_label_it_was_fit_on() -> None:
    """Labels drawn at random over distinct texts: a teacher fit on the texts it predicts would
    repeat their labels (logistic regression at C=100 on their n-grams scores about 1.0); out of
    fold it can only guess (about 0.5). On texts with cues it learns them."""
    rng = random.Random(0)
    texts = [_words(rng, 8) for _ in range(300)]
    noise = np.array([rng.randrange(2) for _ in texts])
    x, _ = baseline.features(texts, SETTINGS, "test", "nothing")
    in_sample = baseline.logistic_fits([(100.0, x, noise)])[0]
    assert np.mean(in_sample.predict(x) == noise) > 0.95, "the check below can tell a teacher that saw its labels"
    teacher = distill.teacher(texts, noise, 2, SETTINGS, 5, 100.0)
    assert teacher.shape == (300, 2) and np.allclose(teacher.sum(1), 1.0)
    assert np.mean(teacher.argmax(1) == noise) < 0.65
    cued = [f"{_words(rng, 6)} {'superb' if y else 'dreadful'}" for y in noise]
    assert np.mean(distill.teacher(cued, noise, 2, SETTINGS, 5, 100.0).argmax(1) == noise) > 0.95


def test_a_teacher_is_the_same_for_the_same_texts_whatever_else_and_each_class_gets_a_column() -> None:
    """Deterministic (a rerun trains on the same targets); a class missing from the texts gets
    probability 0; a fold left with one class gives its texts their own labels."""
    rng = random.Random(1)
    texts = [_words(rng, 5) + (" alpha" if i % 3 == 0 else " beta" if i % 3 == 1 else "") for i in range(60)]
    labels = np.array([0 if i % 3 == 0 else 1 if i % 3 == 1 else 3 for i in range(60)])
    first = distill.teacher(texts, labels, 4, SETTINGS, 5, 1.0)
    distill._TEACHERS.clear()
    again = distill.teacher(texts, labels, 4, SETTINGS, 5, 1.0)
    assert np.array_equal(first, again) and not first.flags.writeable
    assert first.shape == (60, 4) and (first[:, 2] == 0).all()
    lone = np.array([0] * 59 + [1])  # class 1's only text: the folds without it have one class
    probs = distill.teacher(texts, lone, 2, SETTINGS, 5, 1.0)
    assert (probs[:59, 0] > 0).all() and probs[59].tolist() == [0.0, 1.0]


def test_more_folds_than_any_class_has_texts_gives_as_many_folds_as_the_largest_has() -> None:
    """``training.distill.folds`` takes up to 100: on 60 texts of 20 per class, 50 folds was
    scikit-learn's traceback ("n_splits=50 cannot be greater than the number of members in each
    class"), in a train run, a search's refits and a rerun alike."""
    rng = random.Random(2)
    labels = np.array([i % 3 for i in range(60)])
    texts = [f"{_words(rng, 5)} {('alpha', 'beta', 'gamma')[y]}" for y in labels]
    probs = distill.teacher(texts, labels, 3, SETTINGS, 50, 10.0)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(1), 1.0)
    assert (probs.max(1) < 1.0).all()  # each text's teacher is a fit, out of fold, not its own label
    assert np.mean(probs.argmax(1) == labels) > 0.9


def _prepared(make_cfg, tmp_path: Path, *overrides: str):
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=160)
    cfg = make_cfg("dataset=files", f"dataset.path={data}", "training.distill.alpha=0.5", *overrides)
    experiment.seed_everything(cfg.seed, cfg.training.deterministic)
    return cfg, experiment.prepare(cfg)


def test_each_fit_s_teacher_is_fit_on_the_texts_that_fit_trains_on_and_no_other(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """The training split for a trial, train+validation for a refit, a fold's training rows for a
    fold: never a text the model is validated or tested on. (Spied on where the teacher's
    features are fit: every text the teacher sees goes through it.)"""
    from pipeline.model import build_model
    from pipeline.tuning import final, folds

    cfg, prepared = _prepared(make_cfg, tmp_path)
    prepared.linear_c.value = 1.0  # the baseline's, chosen on the validation split (a setting, as the LSTM's are)
    seen: List[List[str]] = []
    real = baseline.features
    monkeypatch.setattr(baseline, "features", lambda texts, *a: (seen.append(list(texts)), real(texts, *a))[1])
    splits = prepared.splits
    train, val, test = (list(s.texts) for s in (splits.train, splits.val, splits.test))

    def fit(data, training) -> List[str]:
        seen.clear()
        distill._TEACHERS.clear()
        experiment.fit(build_model(cfg, data.shape), data, training, 1)
        assert len(seen) == 1
        return seen[0]

    assert fit(prepared, cfg.training) == train
    refit = OmegaConf.merge(cfg.training, {"fit_on": "train_val", "early_stopping": {"enabled": False}})
    assert fit(prepared, refit) == train + val
    # a search's refits (tuner.final.distill) where its trials learn from the label alone
    search = make_cfg("dataset=files", f"dataset.path={cfg.dataset.path}", "tuner.final.distill.alpha=0.5", config_name="tune")
    assert not experiment.distilled(search.training) and experiment.distilled(final.refit_training(search))
    assert fit(prepared, OmegaConf.merge(final.refit_training(search), {"early_stopping": {"enabled": False}})) == train + val
    # null: the refits' targets are the trials' (a search distilled throughout keeps its refits distilled); 1: the label alone
    both = make_cfg("dataset=files", f"dataset.path={cfg.dataset.path}", "training.distill.alpha=0.5", config_name="tune")
    assert final.refit_training(both).distill.alpha == 0.5
    label = make_cfg("dataset=files", f"dataset.path={cfg.dataset.path}", "training.distill.alpha=0.5", "tuner.final.distill.alpha=1", config_name="tune")
    assert not experiment.distilled(final.refit_training(label))
    assert not experiment.distilled(final.refit_training(make_cfg("dataset=files", f"dataset.path={cfg.dataset.path}", config_name="tune")))
    labelled = train + val
    train_rows, val_rows = folds.splits(prepared, 3, 0)[1]
    assert fit(folds.fold_data(prepared, train_rows, val_rows), cfg.training) == [labelled[i] for i in train_rows]
    assert not set(labelled[i] for i in val_rows) & set(seen[0])
    assert not set(test) & set(train + val), "the test split's texts are not among these"


@pytest.mark.parametrize("classes, monitor", [(2, "val_loss"), (5, "val_loss"), (2, "val_accuracy")])
def test_a_distilled_fit_stops_and_reports_on_the_label_and_ends_compiled_as_any_model(make_cfg, tmp_path: Path, classes: int, monitor: str) -> None:
    """``val_loss`` is the cross-entropy with the validation labels (what the restored model
    evaluates to), ``accuracy`` agreement with the label, and early stopping can watch either;
    after the fit the model has the standard loss, so it evaluates, averages and saves as without
    distillation."""
    from pipeline.model import build_model

    settings = ["training.epochs=3", "training.early_stopping.patience=0", f"training.early_stopping.monitor={monitor}"]
    if classes == 2:
        cfg, prepared = _prepared(make_cfg, tmp_path, *settings)
    else:  # BBC News's five topics
        cfg = make_cfg("dataset.max_samples=150", "training.distill.alpha=0.3", *settings)
        prepared = experiment.prepare(cfg)
    assert prepared.shape.num_classes == classes
    model = build_model(cfg, prepared.shape)
    history = experiment.fit(model, prepared, cfg.training, cfg.seed).history
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"] + history["val_accuracy"])
    x_val, y_val = prepared.encoded["val"]
    evaluated = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
    # early stopping restored this epoch's weights (the first best)
    best = int(np.argmin(history["val_loss"]) if monitor == "val_loss" else np.argmax(history["val_accuracy"]))
    assert evaluated["loss"] == pytest.approx(history["val_loss"][best], rel=1e-4)
    assert evaluated["accuracy"] == pytest.approx(history["val_accuracy"][best], abs=1e-6)
    assert model.loss == ("binary_crossentropy" if classes == 2 else "sparse_categorical_crossentropy")


@pytest.mark.parametrize("classes", [2, 4])
def test_the_distilled_loss_is_cross_entropy_with_the_mixed_target_weighted_as_keras_weights(classes: int) -> None:
    """alpha x cross-entropy with the label + (1 - alpha) x with the teacher, each text weighted
    by its class weight as Keras's ``class_weight`` weights it; accuracy counts the label."""
    import keras

    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 32)
    teacher = rng.dirichlet(np.ones(classes), 32)
    probs = rng.dirichlet(np.ones(classes), 32)
    weights = rng.uniform(0.5, 2.0, 32)
    packed = distill.targets(labels, teacher, 0.3, classes, weights)
    output = probs[:, 1:] if classes == 2 else probs
    got = np.asarray(distill.loss(classes == 2)(packed, output.astype("float32")))
    cross = lambda target: -(target * np.log(probs)).sum(1)  # noqa: E731
    onehot = np.eye(classes)[labels]
    assert got == pytest.approx(weights * (0.3 * cross(onehot) + 0.7 * cross(teacher)), rel=1e-4)
    plain = distill.targets(labels, None, 0.3, classes, weights)  # validation: the label alone
    keras_loss = keras.losses.BinaryCrossentropy() if classes == 2 else keras.losses.SparseCategoricalCrossentropy()
    expected = float(keras_loss(labels, output, sample_weight=weights))
    assert float(np.mean(distill.loss(classes == 2)(plain, output.astype("float32")))) == pytest.approx(expected, rel=1e-5)
    flipped = distill.targets(labels, np.eye(classes)[(labels + 1) % classes], 0.0, classes)  # a teacher always wrong
    metric = distill.accuracy(classes == 2)
    metric.update_state(flipped, output.astype("float32"))
    assert float(metric.result()) == pytest.approx(float(np.mean(probs.argmax(1) == labels)))


def test_a_teacher_that_cannot_be_fit_is_one_line_before_any_run(tmp_path: Path, store_uri: str) -> None:
    """Texts without a word or character n-gram in two of them: no teacher; said before a run opens."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    (tmp_path / "letters.csv").write_text("text,label\n" + "".join(f"{c},{'x' if i % 2 else 'y'}\n" for i, c in enumerate(letters * 1)))
    result = run_cli(["train", *SHRINK, "dataset=files", "dataset.path=letters.csv", "training.distill.alpha=0.5"], cwd=tmp_path)
    assert_one_line_error(result, "teacher", "cannot be fit", "training.distill.alpha=null")
    assert runs_in(store_uri) == []
    # a search's refits' teacher (tuner.final.distill), with the baseline's own check off
    result = run_cli(["tune", *SHRINK, "dataset=files", "dataset.path=letters.csv", "baseline.enabled=false",
                      "tuner.final.distill.alpha=0.5"], cwd=tmp_path)
    assert_one_line_error(result, "teacher", "cannot be fit", "tuner.final.distill.alpha=null")
    assert runs_in(store_uri) == [] and not (tmp_path / "tuner").exists()
    # the refits' teacher where they follow the trials (null) and the trials' is fit per fold, later:
    # the setting that turns it off is the trials'
    result = run_cli(["tune", *SHRINK, "dataset=files", "dataset.path=letters.csv", "baseline.enabled=false",
                      "training.distill.alpha=0.5", "tuner.cv_folds=3"], cwd=tmp_path)
    assert_one_line_error(result, "teacher", "cannot be fit", "training.distill.alpha=null")
    assert runs_in(store_uri) == [] and not (tmp_path / "tuner").exists()
