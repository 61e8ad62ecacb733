"""The MLflow pyfunc model logged with every run: raw texts in, label and probabilities out.

Logged as an MLflow "model from code" (this file is copied into the model, nothing is
pickled), around the saved end-to-end Keras model (TextVectorization -> LSTM classifier)
and its label map. MLflow's own Keras flavour cannot feed raw strings to a model.

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    model.predict(pd.DataFrame({"text": ["a great film", "dull"]}))
    #   label  confidence  probabilities
    #   1      0.93        {"0": 0.07, "1": 0.93}
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

TEXT_COLUMN = "text"
#: Unicode punctuation and symbols (``!``, ``?``, ``$``, ``£``, ``%``, emoji): each becomes a token.
PUNCTUATION = r"([\p{P}\p{S}])"


# The standardisations of ``dataset.split_punctuation`` live here, in the one code file logged with
# every model, so that a saved model's TextVectorization finds them wherever it is loaded.
@keras.saving.register_keras_serializable(package="pipeline", name="split_punctuation")
def split_punctuation(text: Any) -> Any:
    """Punctuation and symbols set apart as tokens of their own (``great!`` -> ``great !``)."""
    import tensorflow as tf

    return tf.strings.regex_replace(text, PUNCTUATION, r" \1 ")


@keras.saving.register_keras_serializable(package="pipeline", name="lower_and_split_punctuation")
def lower_and_split_punctuation(text: Any) -> Any:
    """Lower-cased, with punctuation and symbols set apart as tokens of their own."""
    import tensorflow as tf

    return split_punctuation(tf.strings.lower(text))


@keras.saving.register_keras_serializable(package="pipeline")
class MaxOverSteps(keras.layers.GlobalMaxPooling1D):
    """``model.pooling=max``: Keras's GlobalMaxPooling1D over every step, padded ones included, as
    it always computed, without its warning at every build and trace that the padding mask is
    dropped. The LSTM's padded steps repeat its last output (one direction) or are zeros
    (bidirectional), so reading them is a floor at 0, never a spurious peak; the mask ends here
    (nothing after it is a sequence)."""

    supports_masking = True

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None


@keras.saving.register_keras_serializable(package="pipeline")
class MeanOverSteps(keras.layers.GlobalAveragePooling1D):
    """``model.pooling=mean``: Keras's GlobalAveragePooling1D over the real tokens (the padding
    mask), the same numbers, except that a text with no token (empty, blank, or only what the
    standardisation strips) pools to zeros instead of 0 / 0: Keras's layer gave NaN probabilities
    there, which ``pipeline predict`` and a served model answered (not JSON) with the first
    label. Zeros give the classifier's answer to no evidence (its bias), as the last state of an
    LSTM that read nothing does."""

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None:
            return super().call(inputs)
        from keras import ops

        steps_axis = 1 if self.data_format == "channels_last" else 2
        real = ops.cast(ops.expand_dims(mask, 2 if self.data_format == "channels_last" else 1), "bool")
        total = ops.sum(ops.where(real, inputs, 0), axis=steps_axis, keepdims=self.keepdims)
        count = ops.sum(ops.cast(real, inputs.dtype), axis=steps_axis, keepdims=self.keepdims)
        return total / ops.maximum(count, 1)  # the count itself wherever a text has a token


class UnreadableInput(MlflowException, ValueError):
    """An input the model cannot read, as MLflow says it: its scoring server answers 400 with the
    message (any other exception is "an unexpected error" and the server's traceback). A ValueError
    too, as the model raised before."""


def _refused(message: str) -> Exception:
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return UnreadableInput(message, error_code=INVALID_PARAMETER_VALUE)


def _texts(model_input: Any) -> List[str]:
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif model_input.shape[1] == 1:
            column = model_input.iloc[:, 0]
        else:
            raise _refused(f"expected a DataFrame with a {TEXT_COLUMN!r} column, got {list(model_input.columns)}")
        return [_text(v) for v in column.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [_text(v) for v in np.asarray(model_input, dtype=object).ravel().tolist()]


def _text(value: Any) -> str:
    """A value as the text it stands for: a missing one (None, NaN, ``pd.NA``: an empty cell of a CSV
    read by pandas) is no text, not the word "nan" or "None"; bytes are UTF-8 (not their repr,
    ``b'...'``); what cannot be UTF-8 (a byte that is not, a lone surrogate) reads as ``?``. A list,
    a mapping or an array is not a text, and is refused."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if not pd.api.types.is_scalar(value):
        raise _refused(f"expected one text per row, got a {type(value).__name__}: {str(value)[:60]}")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # the tokenizer's UTF-8 conversion would fail on the whole batch
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


class TextClassifier(mlflow.pyfunc.PythonModel):
    """Predicts a label and class probabilities for each raw text."""

    def load_context(self, context: Any) -> None:
        import keras

        self.model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True, compile=False)
        with open(context.artifacts["label_map"], encoding="utf-8") as f:
            self.classes: List[str] = json.load(f)["classes"]

    def predict(self, context: Any, model_input: pd.DataFrame, params: Optional[Dict[str, Any]] = None) -> pd.DataFrame:
        texts = _texts(model_input)
        if not texts:
            return pd.DataFrame({"label": [], "confidence": [], "probabilities": []})
        probs = np.asarray(self.model.predict(np.array(texts, dtype=object), batch_size=256, verbose=0), dtype="float64")
        if probs.shape[1] == 1:
            probs = np.hstack([1.0 - probs, probs])
        answered = answers(self.classes, probs)
        if isinstance(model_input, pd.DataFrame):  # a row's answer is found by the row's own index
            answered.index = model_input.index
        return answered


def answers(classes: List[str], probs: np.ndarray) -> pd.DataFrame:
    """What ``predict`` answers for (n, len(classes)) class probabilities: each row's label, its
    probability as the confidence, and every class's probability (also the logged signature's source)."""
    best = probs.argmax(axis=1)
    return pd.DataFrame(
        {
            "label": [classes[i] for i in best],
            "confidence": probs[np.arange(len(best)), best],
            "probabilities": [dict(zip(classes, row.tolist())) for row in probs],
        }
    )


mlflow.models.set_model(TextClassifier())
