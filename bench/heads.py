"""Two changes to the model's head, played on validation data: `bench/defaults.py` per variant.

    python bench/heads.py [--datasets sst2 mr subj bbc_news] [--seeds 1 2 3] \
        [--variants today concat smooth]

Not pipeline settings (tried and not adopted, README "How the defaults were chosen"). In this
process, per variant:

- `today`: the pipeline's defaults, as `pipeline train` builds them;
- `concat`: the LSTM's outputs pooled by their mean over real tokens *and* their maximum, the two
  vectors side by side before the classifier (ULMFiT's concat pooling, without the last state);
- `smooth`: label smoothing 0.1 in the training loss (Keras's `label_smoothing`: the targets 0.95
  and 0.05 for two classes, 0.9 + 0.1/K and 0.1/K for K); the model and its accuracy as today.

Everything else is `bench/defaults.py`'s: the pipeline's own prepare / build / fit, early
stopping on validation (on the loss each fit trains with), the validation split scored; the test
split is never read. Prints the median and the range of validation accuracy over the seeds, the
epochs and the seconds per fit.
"""

from __future__ import annotations

import os

from defaults import interleaved_main  # bench/defaults.py, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SMOOTHING = 0.1


def _patch(variant: str) -> None:
    """Set this process's model builder to ``variant`` (each call undoes the last)."""
    import keras

    from pipeline import model as model_module
    from pipeline.pyfunc_model import MaxOverSteps, MeanOverSteps

    model_module._pooling = _ORIGINAL["pooling"]
    model_module.compile_standard = _ORIGINAL["compile"]
    if variant == "concat":

        def concat_pooling(name: str):  # type: ignore[no-untyped-def]
            def pool(name: str):  # type: ignore[no-untyped-def]
                def apply(x):  # type: ignore[no-untyped-def]
                    return keras.layers.Concatenate(name=name)([MeanOverSteps(name=f"{name}_mean")(x), MaxOverSteps(name=f"{name}_max")(x)])

                return apply

            return pool

        model_module._pooling = concat_pooling
    elif variant == "smooth":

        def compile_smoothed(model, optimizer="rmsprop"):  # type: ignore[no-untyped-def]
            binary = model.outputs[0].shape[-1] == 1
            classes = model.outputs[0].shape[-1]

            def loss(y_true, y_pred):  # type: ignore[no-untyped-def]
                if binary:
                    return keras.losses.binary_crossentropy(keras.ops.cast(y_true, "float32"), y_pred, label_smoothing=SMOOTHING)
                one_hot = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), classes)
                return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=SMOOTHING)

            model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])

        model_module.compile_standard = compile_smoothed
    elif variant != "today":
        raise SystemExit(f"error: unknown variant {variant!r} (today, concat, smooth)")


_ORIGINAL: dict = {}


def _setup() -> None:
    from pipeline import model as model_module

    _ORIGINAL.update(pooling=model_module._pooling, compile=model_module.compile_standard)


def main() -> None:
    interleaved_main(__doc__.splitlines()[0], ["today", "concat", "smooth"], _patch, _setup)


if __name__ == "__main__":
    main()
