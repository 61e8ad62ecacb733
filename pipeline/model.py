"""build_model(cfg, shape) -> a compiled keras.Model, from the ``model`` and ``training`` settings.

A pure function of its arguments: no I/O, no tracking, no Keras Tuner. A search's trial is a
config with the trial's values written in (``pipeline.search_space.with_values``), built here
like any other. A new model family is a new ``conf/model/`` option, and a new field here and in
``ModelConfig`` when it needs one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional

import keras
import numpy as np

from pipeline.errors import ConfigError


def _pooling(name: str) -> Any:
    """The layer ``model.pooling`` names, which turns the last LSTM's outputs into one vector
    (``mean`` or ``max``; ``last`` takes the LSTM's last state and has none)."""
    # in the one code file logged with every model, so that a served model finds them
    from pipeline.pyfunc_model import MaxOverSteps, MeanOverSteps

    return MaxOverSteps if name == "max" else MeanOverSteps


@dataclass(frozen=True)
class DataShape:
    """What the model needs to know about the data."""

    vocab_size: int
    num_classes: int


@keras.saving.register_keras_serializable(package="pipeline")
class Adam(keras.optimizers.Adam):
    """Keras's Adam, updated by TensorFlow's fused ``ResourceApplyAdam`` kernel.

    The same rule and hyperparameters, with two differences a user sees. It is right for
    embeddings: Keras 3's Adam squares an embedding's sparse gradient slice by slice, so a
    token seen twice in a batch gets the sum of the squares, not the square of the sum, in its
    second moment, so its first step is not the learning rate (tests/test_model.py checks that
    this one's is, for a token seen twice, and matches textbook Adam over three steps). And it is faster: one pass over each variable instead of about ten,
    which on SST-2 is most of the embedding's update time (bench/lstm_speed.py).
    """

    def update_step(self, gradient, variable, learning_rate):  # type: ignore[no-untyped-def]
        import tensorflow as tf

        gradient = tf.convert_to_tensor(gradient)  # sums repeated rows of an IndexedSlices first
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)

        def handle(v: Any) -> Any:
            return (v.value if isinstance(v, keras.Variable) else v).handle

        tf.raw_ops.ResourceApplyAdam(
            var=handle(variable),
            m=handle(self._momentums[index]),
            v=handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def _optimizer(name: str, learning_rate: float, clipnorm: Optional[float]) -> keras.optimizers.Optimizer:
    config: dict = {"learning_rate": learning_rate}
    if clipnorm:
        config["clipnorm"] = clipnorm
    if name.lower() == "adam":
        return Adam(**config)
    try:
        return keras.optimizers.get({"class_name": name, "config": config})
    except ValueError:
        raise ConfigError(f"unknown training.optimizer {name!r} (e.g. adam, rmsprop, sgd, adamw)") from None


def build_model(cfg: Any, shape: DataShape, embedding_matrix: Optional[np.ndarray] = None) -> keras.Model:
    """Embedding -> (Bi)LSTM x num_layers -> Dense: sigmoid for two classes, softmax for more.

    Padding id 0 is masked, so the LSTM reads only real tokens. Dropout is applied by separate
    layers, and recurrent dropout only when asked, which keeps the LSTM eligible for the cuDNN
    kernel on a GPU. ``embedding_matrix`` (vocab_size x embedding_dim) initialises the embedding
    (``Prepared.initial_embedding``: a file's vectors, frozen unless ``model.pretrained.trainable``,
    or LSA vectors, trained further).
    """
    model_cfg, training_cfg = cfg.model, cfg.training
    embedding_dim = int(model_cfg.embedding_dim)
    units = int(model_cfg.units)
    num_layers = int(model_cfg.num_layers)
    bidirectional = bool(model_cfg.bidirectional)
    dropout = float(model_cfg.dropout)
    recurrent_dropout = float(model_cfg.recurrent_dropout)
    pooling = str(model_cfg.pooling)
    learning_rate = float(training_cfg.learning_rate)
    for what, value in (("embedding_dim", embedding_dim), ("units", units), ("num_layers", num_layers)):
        if value < 1:
            raise ConfigError(f"model.{what} must be at least 1, got {value}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"training.learning_rate must be a positive number, got {learning_rate}")
    for what, value in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"model.{what} must be in [0, 1), got {value}")
    if embedding_matrix is not None and embedding_matrix.shape != (shape.vocab_size, embedding_dim):
        raise ConfigError(
            f"pretrained vectors have {embedding_matrix.shape[1]} dimensions but model.embedding_dim="
            f"{embedding_dim}; set model.embedding_dim={embedding_matrix.shape[1]}"
        )

    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embedding = keras.layers.Embedding(
        shape.vocab_size,
        embedding_dim,
        mask_zero=True,
        # a file's vectors stay as they are unless pretrained.trainable; LSA vectors train on
        trainable=embedding_matrix is None or not model_cfg.pretrained.path or bool(model_cfg.pretrained.trainable),
        name="embedding",
    )
    x = embedding(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(num_layers):
        last = i == num_layers - 1
        sequences = not last or pooling != "last"
        lstm = keras.layers.LSTM(units, return_sequences=sequences, recurrent_dropout=recurrent_dropout, name=f"lstm_{i}")
        x = keras.layers.Bidirectional(lstm, name=f"bilstm_{i}")(x) if bidirectional else lstm(x)
        if last and pooling != "last":
            # mean honours the padding mask; max reads padded steps too, which repeat the last
            # output (one direction) or are zeros (bidirectional): a floor at 0, never a spurious peak
            x = _pooling(pooling)(name=f"{pooling}_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    binary = shape.num_classes == 2
    outputs = keras.layers.Dense(
        1 if binary else shape.num_classes, activation="sigmoid" if binary else "softmax", name="classifier"
    )(x)
    model = keras.Model(inputs, outputs, name=str(model_cfg.name))
    if embedding_matrix is not None:
        embedding.set_weights([embedding_matrix.astype("float32")])
    compile_standard(model, _optimizer(training_cfg.optimizer, learning_rate, training_cfg.clipnorm))
    return model


def compile_standard(model: keras.Model, optimizer: Any = "rmsprop") -> None:
    """Compiled with cross-entropy against the label id and ``accuracy`` (a distilled fit compiles
    its own loss for the fit, and this again after it: ``pipeline/distill.py``)."""
    binary = model.outputs[0].shape[-1] == 1
    model.compile(optimizer=optimizer, loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy", metrics=["accuracy"])


def average(members: List[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the members' class probabilities (an ensemble).

    Each member keeps its own layers, as a nested model ``member_<i>``; the result is compiled
    with the members' loss and accuracy, so it evaluates, saves and serves as any single model.
    """
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    outputs = [keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    model = keras.Model(inputs, keras.layers.Average(name="average")(outputs), name="ensemble")
    compile_standard(model)
    return model


def text_model(vectorizer: Any, model: keras.Model, name: Optional[str] = None) -> keras.Model:
    """The end-to-end model: raw strings -> TextVectorization -> the trained classifier.

    The classifier goes in as an uncompiled copy, rebuilt from its config (named ``name``, else
    as the model): a saved model for inference carries no optimizer (Adam's state would triple
    its size, and the pipeline's Adam class would be needed to load it where the pipeline is
    not installed).
    """
    config = model.get_config()
    if name is not None:
        config["name"] = name
    inference = keras.Model.from_config(config)
    inference.set_weights(model.get_weights())
    text = keras.Input(shape=(), dtype="string", name="text")
    return keras.Model(text, inference(vectorizer(text)), name="text_classifier")


def class_probabilities(model: keras.Model, inputs: Any, batch_size: int = 256) -> np.ndarray:
    """(n, num_classes) probabilities, also for the one-unit sigmoid head."""
    probs = np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), dtype="float64")
    if probs.shape[1] == 1:
        probs = np.hstack([1.0 - probs, probs])
    return probs
