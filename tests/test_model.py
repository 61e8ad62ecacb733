"""The model family: the tutorial's LSTM, bidirectional and stacked variants, tuner-ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from pipeline import evaluate, vectors
from pipeline.errors import ConfigError, DataError
from pipeline.model import DataShape, build_model, text_model
from pipeline.tracking.models import PYFUNC_MODEL_FILE


def _layers(model: keras.Model, kind: type) -> list:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_tutorial_model_for_two_classes_has_one_sigmoid_unit(make_cfg) -> None:
    cfg = make_cfg("model=lstm")
    model = build_model(cfg, DataShape(vocab_size=50, num_classes=2))
    head = model.get_layer("classifier")
    assert head.units == 1 and head.activation.__name__ == "sigmoid"
    assert model.loss == "binary_crossentropy"
    lstm = _layers(model, keras.layers.LSTM)
    assert len(lstm) == 1 and lstm[0].units == 8
    # cuDNN eligibility on a GPU: standard activations, no recurrent dropout by default
    assert lstm[0].activation.__name__ == "tanh" and lstm[0].recurrent_dropout == 0


def test_multiclass_uses_softmax(make_cfg) -> None:
    cfg = make_cfg()
    model = build_model(cfg, DataShape(vocab_size=50, num_classes=5))
    head = model.get_layer("classifier")
    assert head.units == 5 and head.activation.__name__ == "softmax"
    assert model.loss == "sparse_categorical_crossentropy"


@pytest.mark.parametrize("name, layers, bidirectional", [("bilstm", 1, True), ("stacked_lstm", 2, False), ("stacked_bilstm", 2, True)])
def test_variants(make_cfg, name: str, layers: int, bidirectional: bool) -> None:
    cfg = make_cfg(f"model={name}")
    model = build_model(cfg, DataShape(vocab_size=50, num_classes=3))
    assert len(_layers(model, keras.layers.Bidirectional) if bidirectional else _layers(model, keras.layers.LSTM)) == layers
    assert _layers(model, keras.layers.Dropout), "these variants regularise with dropout"
    out = model.predict(np.array([[3, 4, 5, 0, 0]]), verbose=0)
    assert out.shape == (1, 3) and np.isclose(out.sum(), 1.0, atol=1e-5)


def test_padding_does_not_change_the_prediction(make_cfg) -> None:
    cfg = make_cfg()
    keras.utils.set_random_seed(0)
    model = build_model(cfg, DataShape(vocab_size=50, num_classes=2))
    short = model.predict(np.array([[7, 8, 9]]), verbose=0)
    padded = model.predict(np.array([[7, 8, 9, 0, 0, 0, 0]]), verbose=0)
    np.testing.assert_allclose(short, padded, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_max_pooling_reads_every_step_as_keras_does_without_a_mask_warning(make_cfg, tmp_path: Path, bidirectional: bool) -> None:
    """Keras's GlobalMaxPooling1D warned at every build and trace that it drops the padding mask
    (a user of model.pooling=max saw it on every search); the pipeline's max pooling computes the
    same values, padded steps included, and says nothing."""
    import warnings

    cfg = make_cfg("model.pooling=max", f"model.bidirectional={str(bidirectional).lower()}")
    ids = np.array([[7, 8, 9, 0, 0], [4, 5, 6, 7, 8]])
    keras.utils.set_random_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(cfg, DataShape(vocab_size=50, num_classes=3))
        model.fit(ids, np.array([0, 2]), epochs=1, verbose=0)
        ours = model.predict(ids, verbose=0)
    assert not [w for w in caught if "mask" in str(w.message)], [str(w.message) for w in caught]
    # the maximum over every step of the LSTM's outputs, padded ones included, as Keras's layer took it
    steps = keras.Model(model.input, model.get_layer("max_pool").input)(ids)
    np.testing.assert_allclose(ours, model.get_layer("classifier")(keras.ops.max(steps, axis=1)), atol=1e-6)
    # and a saved model loads back to the same predictions where only the code logged with every
    # model is there (MLflow runs pyfunc_model.py from its path; the pipeline package may be absent).
    # Once: the pooling layer loads alike either way, and each load is a TensorFlow start-up.
    if not bidirectional:
        return
    model.save(tmp_path / "max.keras")
    np.save(tmp_path / "ids.npy", ids)
    script = (
        "import importlib.util, sys, numpy as np, keras\n"
        f"spec = importlib.util.spec_from_file_location('logged_code', {str(PYFUNC_MODEL_FILE)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert not any(m.startswith('pipeline') for m in sys.modules), sorted(m for m in sys.modules if m.startswith('pipeline'))\n"
        f"m = keras.saving.load_model({str(tmp_path / 'max.keras')!r}, safe_mode=True, compile=False)\n"
        f"np.save({str(tmp_path / 'served.npy')!r}, m.predict(np.load({str(tmp_path / 'ids.npy')!r}), verbose=0))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), ours, atol=1e-6)


def test_mean_pooling_answers_a_text_without_a_token_with_the_classifier_alone(make_cfg) -> None:
    """An empty or blank text (or one of only what the standardisation strips) has no token: Keras's
    mean pooling divided by its zero count, and `pipeline predict` answered NaN probabilities and
    the first label. The pipeline's pools such a text to zeros (the classifier's answer to no
    evidence) and every other text to Keras's numbers, to the bit. (The pooling sees the LSTM's
    outputs alike in either direction: one direction here.)"""
    cfg = make_cfg("model.pooling=mean")
    ids = np.array([[7, 8, 9, 0, 0], [4, 5, 6, 7, 8], [0, 0, 0, 0, 0]])
    keras.utils.set_random_seed(0)
    model = build_model(cfg, DataShape(vocab_size=50, num_classes=3))
    model.fit(ids[:2], np.array([0, 2]), epochs=1, verbose=0)
    ours = model.predict(ids, verbose=0)
    assert np.isfinite(ours).all(), ours
    steps = keras.Model(model.input, model.get_layer("lstm_0").output)(ids)  # what is pooled
    classifier = model.get_layer("classifier")
    with np.errstate(invalid="ignore"):
        keras_pooled = keras.layers.GlobalAveragePooling1D().call(steps, mask=keras.ops.convert_to_tensor(ids != 0))
    assert np.isnan(keras.ops.convert_to_numpy(keras_pooled)[2]).all()  # Keras's layer alone: 0 / 0
    np.testing.assert_array_equal(ours[:2], keras.ops.convert_to_numpy(classifier(keras_pooled))[:2])
    np.testing.assert_allclose(ours[2], keras.ops.convert_to_numpy(classifier(keras.ops.zeros((1, steps.shape[-1]))))[0], atol=1e-7)


def _textbook_adam(grads: list, w0: np.ndarray, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7) -> np.ndarray:
    w, m, v = w0.astype("float64"), np.zeros_like(w0, dtype="float64"), np.zeros_like(w0, dtype="float64")
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w


def test_adam_follows_the_textbook_rule_on_embeddings_with_repeated_tokens(make_cfg) -> None:
    import tensorflow as tf

    from pipeline.model import Adam

    cfg = make_cfg("training.optimizer=adam")
    assert isinstance(build_model(cfg, DataShape(50, 2)).optimizer, Adam)
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((6, 3)).astype("float32")
    # an embedding's gradient: rows 1 and 4 twice (a token seen twice in the batch), rows 0 and 5 not at all
    sparse = [
        tf.IndexedSlices(tf.constant(rng.standard_normal((4, 3)), tf.float32), tf.constant([1, 4, 1, 4]), tf.constant([6, 3]))
        for _ in range(3)
    ]
    dense = [tf.convert_to_tensor(g).numpy() for g in sparse]
    variable = keras.Variable(w0)
    optimizer = Adam(learning_rate=0.1)
    for g in sparse:
        optimizer.apply([g], [variable])
    np.testing.assert_allclose(variable.numpy(), _textbook_adam(dense, w0, 0.1), rtol=1e-5, atol=1e-6)
    # the first step of Adam moves every touched coordinate by the learning rate
    first = keras.Variable(w0)
    Adam(learning_rate=0.1).apply([sparse[0]], [first])
    moved = np.abs(first.numpy() - w0)
    np.testing.assert_allclose(moved[[1, 2, 3, 4]][:, :], np.where(dense[0][[1, 2, 3, 4]] != 0, 0.1, 0.0), atol=1e-5)
    assert not moved[[0, 5]].any()


def test_bad_model_settings_are_clear_errors(make_cfg) -> None:
    from hydra.errors import ConfigCompositionException

    # an optimizer Keras does not have: refused when the config is composed, with the ones it has
    with pytest.raises(ConfigCompositionException) as refused:
        make_cfg("training.optimizer=adamz")
    assert "Invalid value 'adamz', expected one of [adam, adamw, sgd" in str(refused.value.__cause__)
    cfg = make_cfg("model.dropout=1.5")
    with pytest.raises(ConfigError, match="model.dropout"):
        build_model(cfg, DataShape(50, 2))


def test_every_optimizer_the_config_offers_is_one_keras_builds(make_cfg) -> None:
    from pipeline.config import Optimizer

    for name in Optimizer:
        model = build_model(make_cfg(f"training.optimizer={name}", "training.clipnorm=1.0"), DataShape(50, 2))
        assert model.optimizer.name.replace("_", "").startswith(str(name)), (name, model.optimizer.name)


def test_text_model_takes_raw_strings(make_cfg) -> None:
    cfg = make_cfg()
    vectorizer = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=6)
    vectorizer.adapt(np.array(["good film", "bad film"], dtype=object))
    model = build_model(cfg, DataShape(len(vectorizer.get_vocabulary()), 2))
    e2e = text_model(vectorizer, model)
    texts = np.array(["good film", "bad bad film"], dtype=object)
    np.testing.assert_allclose(
        e2e.predict(texts, verbose=0), model.predict(vectorizer(texts), verbose=0), atol=1e-6
    )


def _write_glove(path: Path) -> dict:
    vecs = {"good": [0.1, 0.2, 0.3], "film": [0.4, 0.5, 0.6], "unused": [9.0, 9.0, 9.0]}
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vecs.items()), encoding="utf-8")
    return vecs


def test_glove_vectors_fill_the_embedding_and_report_coverage(tmp_path: Path) -> None:
    vecs = _write_glove(tmp_path / "glove.txt")
    vocabulary = ["", "[UNK]", "good", "film", "bad"]
    matrix, coverage = vectors.load_embedding_matrix(str(tmp_path / "glove.txt"), "auto", vocabulary, seed=0)
    assert matrix.shape == (5, 3)
    np.testing.assert_allclose(matrix[2], vecs["good"])
    np.testing.assert_allclose(matrix[3], vecs["film"])
    assert np.all(matrix[0] == 0)
    assert coverage == pytest.approx(2 / 3)  # good, film of good, film, bad


@pytest.mark.parametrize("first", [True, False], ids=["first-line", "later-line"])
def test_glove_lines_whose_word_has_spaces_are_passed_over(tmp_path: Path, first: bool) -> None:
    """glove.840B.300d has a few (``. . .``, ``at name@domain.com``): once refused as a
    malformed file, the whole run with it."""
    lines = ["good 1 2 3", "film 4 5 6", ". . . 0.1 0.2 0.3", "at name@domain.com 7 8 9"]
    path = tmp_path / "glove.txt"
    path.write_text("\n".join(lines[2:] + lines[:2] if first else lines) + "\n", encoding="utf-8")
    assert vectors.file_dimension(str(path), "auto") == 3
    matrix, coverage = vectors.load_embedding_matrix(str(path), "auto", ["", "[UNK]", "film", "good", "at"], seed=0)
    np.testing.assert_allclose(matrix[2:4], [[4, 5, 6], [1, 2, 3]])
    assert coverage == pytest.approx(2 / 3)  # "at" is not the line "at name@domain.com ..."
    path.write_text("good 1 2 3\nfilm 4 5 6\n", encoding="utf-8-sig")  # a byte-order mark, as some editors write
    assert vectors.load_embedding_matrix(str(path), "auto", ["", "[UNK]", "good"], seed=0)[1] == 1.0
    path.write_text("good 1 2 3\nfilm 4 5\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: 2 values, expected 3"):
        vectors.load_embedding_matrix(str(path), "auto", ["", "[UNK]", "film"], seed=0)


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_text_and_binary(tmp_path: Path, binary: bool) -> None:
    words = {"good": np.array([1.0, -1.0], "float32"), "film": np.array([0.5, 0.25], "float32")}
    path = tmp_path / ("w2v.bin" if binary else "w2v.txt")
    if binary:
        path.write_bytes(b"2 2\n" + b"".join(w.encode() + b" " + v.astype("<f4").tobytes() + b"\n" for w, v in words.items()))
    else:
        path.write_text("2 2\n" + "".join(f"{w} {v[0]} {v[1]}\n" for w, v in words.items()))
    matrix, coverage = vectors.load_embedding_matrix(str(path), "auto", ["", "[UNK]", "film", "good"], seed=0)
    np.testing.assert_allclose(matrix[2], words["film"])
    np.testing.assert_allclose(matrix[3], words["good"])
    assert coverage == 1.0


def test_frozen_pretrained_embedding(tmp_path: Path, make_cfg) -> None:
    _write_glove(tmp_path / "glove.txt")
    cfg = make_cfg("model.embedding_dim=3", f"model.pretrained.path={tmp_path / 'glove.txt'}")
    matrix, _ = vectors.load_embedding_matrix(str(tmp_path / "glove.txt"), "glove", ["", "[UNK]", "good"], seed=0)
    model = build_model(cfg, DataShape(3, 2), embedding_matrix=matrix)
    embedding = model.get_layer("embedding")
    assert not embedding.trainable
    np.testing.assert_allclose(embedding.get_weights()[0], matrix)
    with pytest.raises(ConfigError, match="set model.embedding_dim=3"):
        build_model(make_cfg("model.embedding_dim=8"), DataShape(3, 2), embedding_matrix=matrix)
    with pytest.raises(DataError, match="not found"):
        vectors.load_embedding_matrix(str(tmp_path / "nope.txt"), "auto", ["", "[UNK]"], seed=0)


def test_lsa_vectors_put_words_of_the_same_texts_together() -> None:
    """Words 2-4 only ever appear together, as do 5-7: in two dimensions each group's vectors point
    the same way and away from the other's; padding, [UNK] and a word no text has are zero."""
    rng = np.random.default_rng(0)
    texts = [list(rng.choice([2, 3, 4], size=6)) + [0, 0] for _ in range(20)]
    texts += [list(rng.choice([5, 6, 7], size=6)) + [1, 0] for _ in range(20)]
    ids = np.array(texts)
    matrix = vectors.lsa_vectors(ids, vocab_size=9, dim=2)
    assert matrix.shape == (9, 2) and matrix.dtype == np.float32
    assert not matrix[[0, 1, 8]].any()

    def cosine(a: int, b: int) -> float:
        return float(matrix[a] @ matrix[b] / np.linalg.norm(matrix[a]) / np.linalg.norm(matrix[b]))

    assert min(cosine(2, 3), cosine(3, 4), cosine(5, 6), cosine(6, 7)) > 0.9
    assert max(abs(cosine(2, 5)), abs(cosine(4, 7))) < 0.1
    assert matrix.std() == pytest.approx(vectors.LSA_SCALE, rel=1e-3)
    vectors._LSA_CACHE.clear()  # computed again, not read back: the same matrix (the SVD's seed is fixed)
    np.testing.assert_array_equal(vectors.lsa_vectors(ids.copy(), vocab_size=9, dim=2), matrix)
    assert not vectors.lsa_vectors(ids[:20], vocab_size=9, dim=2)[5:].any()  # another input, another matrix


@pytest.mark.parametrize("ids", [np.zeros((0, 3), int), [[0, 0]], [[1, 1]], [[2, 0]], [[2, 3]], [[2, 0], [2, 0]], [[2, 2], [1, 0]]], ids=str)
def test_lsa_vectors_of_fewer_than_two_texts_or_words_are_none(ids: list) -> None:
    assert vectors.lsa_vectors(np.array(ids), vocab_size=4, dim=16) is None


def test_lsa_vectors_are_zero_past_the_dimensions_the_texts_span() -> None:
    matrix = vectors.lsa_vectors(np.array([[2, 0], [3, 0]]), vocab_size=4, dim=16)
    assert matrix.shape == (4, 16) and np.isfinite(matrix).all()
    assert matrix[[2, 3], 0].all() and not matrix[:, 1:].any() and not matrix[:2].any()


def test_lsa_vectors_are_trained_further_and_a_files_stay_frozen(tmp_path: Path, make_cfg) -> None:
    matrix = vectors.lsa_vectors(np.array([[2, 3, 4], [2, 4, 0], [3, 4, 0]]), vocab_size=5, dim=8)
    model = build_model(make_cfg(), DataShape(5, 2), embedding_matrix=matrix)
    embedding = model.get_layer("embedding")
    assert embedding.trainable
    np.testing.assert_allclose(embedding.get_weights()[0], matrix)
    _write_glove(tmp_path / "glove.txt")
    cfg = make_cfg("model.embedding_dim=8", f"model.pretrained.path={tmp_path / 'glove.txt'}")
    assert not build_model(cfg, DataShape(5, 2), embedding_matrix=matrix).get_layer("embedding").trainable
    cfg = make_cfg("model.embedding_dim=8", f"model.pretrained.path={tmp_path / 'glove.txt'}", "model.pretrained.trainable=true")
    assert build_model(cfg, DataShape(5, 2), embedding_matrix=matrix).get_layer("embedding").trainable


def test_a_models_lsa_vectors_are_fit_on_the_texts_it_trains_on_and_never_the_test_split(make_cfg) -> None:
    """A trial's embedding starts from the training split's LSA vectors, a refit's (train_val) from the
    training and validation splits', a fold's from its own training rows; never from test texts."""
    from pipeline import experiment
    from pipeline.tuning import folds
    from pipeline.tuning.hypermodel import LSTMHyperModel

    cfg = make_cfg("dataset.max_samples=200", config_name="tune")
    assert cfg.model.embedding_init == "lsa"
    prepared = experiment.prepare(cfg)
    (train, _), (val, _), (test, _) = (prepared.encoded[k] for k in ("train", "val", "test"))
    size, dim = prepared.shape.vocab_size, int(cfg.model.embedding_dim)
    trial = prepared.initial_embedding(cfg)
    np.testing.assert_array_equal(trial, vectors.lsa_vectors(train, size, dim))
    refit = prepared.initial_embedding(make_cfg("dataset.max_samples=200", "training.fit_on=train_val", config_name="tune"))
    np.testing.assert_array_equal(refit, vectors.lsa_vectors(np.concatenate([train, val]), size, dim))
    assert not np.array_equal(refit, trial)
    with_test = vectors.lsa_vectors(np.concatenate([train, val, test]), size, dim)
    assert not np.array_equal(refit, with_test) and not np.array_equal(trial, with_test)
    assert prepared.initial_embedding(make_cfg("dataset.max_samples=200", "model.embedding_init=random", config_name="tune")) is None

    train_rows, val_rows = folds.splits(prepared, 5, 42)[0]
    fold = folds.fold_data(prepared, train_rows, val_rows)
    hp = keras_tuner.HyperParameters()
    model = LSTMHyperModel(cfg, prepared).build_on(hp, fold)
    np.testing.assert_array_equal(model.get_layer("embedding").get_weights()[0],
                                  vectors.lsa_vectors(np.concatenate([train, val])[train_rows], size, dim))
    np.testing.assert_array_equal(LSTMHyperModel(cfg, prepared).build(hp).get_layer("embedding").get_weights()[0], trial)


def test_a_vectors_file_replaces_the_lsa_start(make_cfg, tmp_path: Path) -> None:
    from pipeline import experiment

    _write_glove(tmp_path / "glove.txt")
    cfg = make_cfg("dataset.max_samples=200", "model.embedding_dim=3", f"model.pretrained.path={tmp_path / 'glove.txt'}")
    assert cfg.model.embedding_init == "lsa"
    prepared = experiment.prepare(cfg)
    assert prepared.initial_embedding(cfg) is prepared.embedding_matrix is not None


def test_each_folds_model_starts_from_the_lsa_vectors_of_that_folds_training_rows(make_cfg, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pipeline import experiment
    from pipeline.tuning import folds
    from pipeline.tuning.hypermodel import LSTMHyperModel

    cfg = make_cfg("dataset.max_samples=200", config_name="tune")
    prepared = experiment.prepare(cfg)
    started = []

    class Recorded(LSTMHyperModel):
        def build_on(self, hp, on):  # type: ignore[no-untyped-def]
            model = super().build_on(hp, on)
            started.append(model.get_layer("embedding").get_weights()[0])
            return model

    trial = SimpleNamespace(trial_id="0", hyperparameters=keras_tuner.HyperParameters())
    folds.cross_validate(Recorded(cfg, prepared), trial, cfg, prepared, tmp_path, 2, 1, log=False)
    ids = np.concatenate([prepared.encoded["train"][0], prepared.encoded["val"][0]])
    expected = [vectors.lsa_vectors(ids[train_rows], prepared.shape.vocab_size, int(cfg.model.embedding_dim))
                for train_rows, _ in folds.search_splits(cfg, prepared, 2)]
    assert len(started) == 2
    for got, want in zip(started, expected):
        np.testing.assert_array_equal(got, want)


def test_metrics_that_do_not_flatter_imbalanced_data() -> None:
    # 90 of 100 are class 0; a model that always says 0 is 90% "accurate" and useless.
    y = np.array([0] * 90 + [1] * 10)
    always_zero = np.tile([0.9, 0.1], (100, 1))
    m = evaluate.classification_metrics(y, always_zero)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["mcc"] == 0.0
    assert m["recall_macro"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((2 * 0.9 / 1.9 + 0.0) / 2)  # F1 of class 0, and 0 for class 1
    assert m["roc_auc"] == pytest.approx(0.5)
    three = evaluate.classification_metrics(np.array([0, 1, 2]), np.eye(3))
    assert three["accuracy"] == 1.0 and three["mcc"] == 1.0 and "roc_auc" not in three
    import warnings

    with warnings.catch_warnings():  # a test file of one class, all predicted right: nothing on stderr
        warnings.simplefilter("error")
        one = evaluate.classification_metrics(np.array([1, 1, 1]), np.tile([0.2, 0.8], (3, 1)))
    assert one["accuracy"] == 1.0 and one["mcc"] == 0.0 and "roc_auc" not in one


def test_misclassified_table_lists_most_confident_mistakes_first() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    table = evaluate.misclassified(["a", "b", "c", "d"], y, probs, ["neg", "pos"], limit=10)
    assert table["text"].tolist() == ["b", "d"]
    assert table["predicted_label"].tolist() == ["neg", "pos"]
    assert table["confidence"].tolist() == [0.8, 0.7]


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooling_reads_every_real_token_and_ignores_padding(make_cfg, pooling: str) -> None:
    cfg = make_cfg(f"model.pooling={pooling}")
    model = build_model(cfg, DataShape(vocab_size=50, num_classes=2))
    assert model.get_layer(f"{pooling}_pool") is not None
    assert _layers(model, keras.layers.LSTM)[0].return_sequences
    # the same tokens with more padding after them: the same prediction
    short = np.array([[5, 9, 3, 0, 0]])
    longer = np.array([[5, 9, 3, 0, 0, 0, 0, 0, 0, 0]])
    assert np.allclose(model.predict(short, verbose=0), model.predict(longer, verbose=0), atol=1e-6)
    # and a different token changes it: the pooled outputs reach the classifier
    assert not np.allclose(model.predict(short, verbose=0), model.predict(np.array([[5, 9, 4, 0, 0]]), verbose=0))


def test_unknown_pooling_is_refused_when_the_config_is_composed(make_cfg) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        make_cfg("model.pooling=attention")
    assert "Invalid value 'attention', expected one of [last, max, mean]" in str(e.value.__cause__)


def test_the_test_accuracy_carries_a_wilson_interval() -> None:
    """8 of 10 right: Wilson's 95% interval is [0.490, 0.943] (Agresti and Coull's worked example
    gives the same); the normal approximation would say [0.552, 1.048], past 1."""
    low, high = evaluate.accuracy_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    y = np.array([0] * 5 + [1] * 5)
    probs = np.eye(2)[np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])]  # 8 of 10 right
    metrics = evaluate.classification_metrics(y, probs)
    assert metrics["accuracy"] == 0.8 and (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == (low, high)
    # all right still leaves room below: a perfect score on 10 texts is not certainty
    assert evaluate.accuracy_interval(10, 10)[0] < 0.75 and evaluate.accuracy_interval(10, 10)[1] == pytest.approx(1.0)
    assert evaluate.with_interval(metrics) == f"0.8000 [{low:.4f}, {high:.4f}]"
