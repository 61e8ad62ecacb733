"""Word dropout, played on validation data: `bench/defaults.py` with whole tokens dropped.

    python bench/word_dropout.py [--datasets sst2 mr subj bbc_news] [--seeds 1 2 3] \
        --variant today= wd25=model.dropout=0.25

Not a pipeline setting (tried and not adopted, README "How the defaults were chosen"): in this
process, `model.dropout=P` builds its embedding dropout with Keras's `noise_shape` (batch, steps,
1), so that each token's whole embedding is zeroed with probability P (word dropout, as in deep
averaging networks), and no dropout after the pooling. Everything else is `bench/defaults.py`:
the pipeline's own prepare / build / fit, early stopping on validation, the validation split
scored; the test split is never read.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    import keras

    class WordDropout(keras.layers.Dropout):
        """The embedding's dropout by whole tokens; none elsewhere."""

        def __init__(self, rate, noise_shape=None, seed=None, name=None, **kwargs):  # type: ignore[no-untyped-def]
            if name == "embedding_dropout":
                super().__init__(rate, noise_shape=(None, None, 1), seed=seed, name=name, **kwargs)
            else:
                super().__init__(0.0, name=name, **kwargs)

    keras.layers.Dropout = WordDropout  # this process only
    from defaults import run_patched  # bench/defaults.py, beside this script

    run_patched()


if __name__ == "__main__":
    main()
