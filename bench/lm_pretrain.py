"""The embedding and LSTM pretrained as a language model on the training texts before the
classifier trains, played on validation data: `bench/defaults.py` per variant.

    python bench/lm_pretrain.py [--datasets sst2 mr subj bbc_news] [--seeds 1 2 3] \
        [--variants today lm1 lm3 lm6]

Not a pipeline setting (tried and not adopted, README "How the defaults were chosen"). In this
process, per variant:

- `today`: the pipeline's fit (the embedding's LSA start, then the classifier on the labels);
- `lmN`: before that fit, the model's own embedding and LSTM layers (shared, not copied) read the
  training split's texts and predict each next word for N epochs (Adam at the pipeline's learning
  rate, the texts batched as the classifier's are; the next word among the training split's
  `OUTPUTS` most frequent, the rest one class, padding not scored): Dai and Le's (2015) language-
  model pretraining of an LSTM classifier, on the labelled texts alone (nothing else can be
  downloaded here). Then the pipeline's fit as `today`.

Everything else is `bench/defaults.py`'s: the pipeline's own prepare / build / fit, early
stopping on validation, the validation split scored; the test split is never read. Prints the
median and the range of validation accuracy over the seeds, the epochs and the seconds per fit
(the pretraining's seconds included).
"""

from __future__ import annotations

import os

import numpy as np

from defaults import interleaved_main  # bench/defaults.py, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The next word is predicted among this many of the most frequent (ids 2..OUTPUTS-1; the
#: vocabulary is sorted by frequency), every rarer word and [UNK] as one class.
OUTPUTS = 4096


def pretrain(model, prepared, training, seed: int, epochs: int) -> None:  # type: ignore[no-untyped-def]
    """Next-word prediction through ``model``'s own embedding and first LSTM layer."""
    import keras
    import tensorflow as tf

    from pipeline import data

    ids = prepared.fit_split(training)[0]
    outputs = int(min(OUTPUTS, prepared.shape.vocab_size))
    encoded = {"train": (ids, np.zeros(len(ids), dtype="int32"))}
    ds = data.make_datasets(encoded, int(training.batch_size), seed, True)["train"]

    def shift(x, _):  # type: ignore[no-untyped-def]
        target = x[:, 1:]
        weight = tf.cast(target > 0, "float32")
        target = tf.where(target >= outputs, tf.ones_like(target), target)  # rare words join [UNK]
        return x[:, :-1], target, weight

    ds = ds.map(shift)
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = model.get_layer("embedding")(inputs)
    x = model.get_layer("lstm_0")(x)
    logits = keras.layers.Dense(outputs, name="next_word")(x)
    lm = keras.Model(inputs, logits)
    lm.compile(
        optimizer=keras.optimizers.Adam(float(training.learning_rate)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    lm.fit(ds, epochs=epochs, verbose=0)


def _patch(variant: str) -> None:
    from pipeline import experiment

    experiment.fit = _ORIGINAL["fit"]
    if variant.startswith("lm") and variant[2:].isdigit():
        epochs = int(variant[2:])

        def fit(model, prepared, training, seed, *args, **kwargs):  # type: ignore[no-untyped-def]
            pretrain(model, prepared, training, seed, epochs)
            return _ORIGINAL["fit"](model, prepared, training, seed, *args, **kwargs)

        experiment.fit = fit
    elif variant != "today":
        raise SystemExit(f"error: unknown variant {variant!r} (today, or lmN for N epochs of pretraining)")


_ORIGINAL: dict = {}


def _setup() -> None:
    from pipeline import experiment

    _ORIGINAL.update(fit=experiment.fit)


def main() -> None:
    interleaved_main(__doc__.splitlines()[0], ["today", "lm1", "lm3", "lm6"], _patch, _setup)


if __name__ == "__main__":
    main()
