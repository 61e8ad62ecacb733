"""Character n-grams in the embedding (fastText's subwords), played on validation data.

    python bench/subwords.py [--datasets mr] [--seeds 1 2 3] [--ngrams 3-5] [-- OVERRIDE ...]

Each (dataset, seed) trains the pipeline's own model twice, on its own splits, with early stopping
on validation, scored on the validation split (the test split is never read): as it is, and with
each word's vector the word's own (the LSA start, as today) plus the mean of vectors of its
character n-grams (``<word>`` cut into n-grams of the --ngrams lengths, as fastText does; only
n-grams that two or more vocabulary words share, each a trainable vector starting at zero, so the
model starts where today's does). The n-grams are of the vocabulary's words: a word outside the
vocabulary is still ``[UNK]``. The layer is put in place of Keras's ``Embedding`` for this
measurement only; it is not a pipeline setting. Prints one row per (dataset, variant): the median
and range of validation accuracy over the seeds, each seed's, the median epochs and seconds per
fit, and the n-gram table's size. Tried and not adopted (README "How the defaults were chosen").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def ngram_table(vocabulary: list, low: int, high: int, cap: int = 40) -> tuple:
    """(vocab x K n-gram ids, 0 for none; vocab x K weights, 1/count; number of ids): the n-grams of
    each vocabulary word that at least one other vocabulary word shares, at most ``cap`` a word."""
    import numpy as np

    grams, counts = [], {}
    for word in vocabulary[2:]:  # after the padding and [UNK]
        s = f"<{word}>"
        g = sorted({s[i:i + n] for n in range(low, high + 1) for i in range(len(s) - n + 1)} - {s})
        grams.append(g)
        for x in g:
            counts[x] = counts.get(x, 0) + 1
    ids = {x: i + 1 for i, x in enumerate(sorted(x for x, c in counts.items() if c >= 2))}
    k = max(1, min(cap, max((sum(x in ids for x in g) for g in grams), default=1)))
    table, weights = np.zeros((len(vocabulary), k), dtype="int32"), np.zeros((len(vocabulary), k), dtype="float32")
    for row, g in enumerate(grams, start=2):
        kept = [ids[x] for x in g if x in ids][:k]
        if kept:
            table[row, :len(kept)], weights[row, :len(kept)] = kept, 1.0 / len(kept)
    return table, weights, len(ids) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--ngrams", default="3-5", help="LOW-HIGH character n-gram lengths")
    parser.add_argument("overrides", nargs="*", help="more overrides for every fit (after --)")
    args = parser.parse_args()
    low, high = (int(n) for n in args.ngrams.split("-"))

    import keras
    import numpy as np
    import tensorflow as tf

    from pipeline import experiment
    from pipeline import model as pipeline_model
    from pipeline.config import compose_train

    class SubwordEmbedding(keras.layers.Embedding):
        def __init__(self, *a, table=None, weights=None, ngrams=None, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, **kw)
            self.table, self.weights_of, self.ngram_count = tf.constant(table), tf.constant(weights), ngrams

        def build(self, input_shape=None):  # type: ignore[no-untyped-def]
            super().build(input_shape)
            self.ngrams = self.add_weight(shape=(self.ngram_count, self.output_dim), initializer="zeros", name="ngrams")

        def set_weights(self, weights):  # type: ignore[no-untyped-def]
            self.embeddings.assign(weights[0])  # the LSA start; the n-grams start at zero

        def call(self, inputs):  # type: ignore[no-untyped-def]
            ids = tf.cast(inputs, "int32")
            unique, index = tf.unique(tf.reshape(ids, [-1]))  # each word of the batch once
            table, weights = tf.gather(self.table, unique), tf.gather(self.weights_of, unique)
            vectors = tf.gather(self.embeddings, unique) + tf.reduce_sum(tf.gather(self.ngrams, table) * weights[..., None], axis=1)
            return tf.reshape(tf.gather(vectors, index), tf.concat([tf.shape(ids), [self.output_dim]], 0))

    print("| dataset | variant | val accuracy (median) | min - max | per seed | epochs | seconds per fit | n-grams x per word |")
    print("|---|---|---|---|---|---|---|---|")
    embedding = keras.layers.Embedding
    for dataset in args.datasets:
        results: dict = {"today": ([], [], [], "-"), f"subwords {low}-{high}": ([], [], [], "")}
        for seed in args.seeds:
            cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0", *args.overrides])
            experiment.seed_everything(seed, cfg.training.deterministic)
            prepared = experiment.prepare(cfg)
            for name in results:
                experiment.seed_everything(seed, cfg.training.deterministic)
                start = time.perf_counter()
                if name != "today":
                    table, weights, count = ngram_table(prepared.vocabulary, low, high)
                    results[name] = (*results[name][:3], f"{count} x {table.shape[1]}")
                    keras.layers.Embedding = lambda *a, **kw: SubwordEmbedding(*a, table=table, weights=weights, ngrams=count, **kw)
                try:
                    model = pipeline_model.build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
                finally:
                    keras.layers.Embedding = embedding
                history = experiment.fit(model, prepared, cfg.training, seed)
                x_val, y_val = prepared.encoded["val"]
                accuracy = float(np.mean(pipeline_model.class_probabilities(model, x_val).argmax(1) == y_val))
                for out, value in zip(results[name], (accuracy, len(history.history["loss"]), time.perf_counter() - start)):
                    out.append(value)
        for name, (scores, epochs, seconds, size) in results.items():
            print(f"| {dataset} | {name} | {statistics.median(scores):.4f} | {min(scores):.4f} - {max(scores):.4f} "
                  f"| {' / '.join(f'{s:.4f}' for s in scores)} | {statistics.median(epochs):g} | {statistics.median(seconds):.0f} | {size} |",
                  flush=True)


if __name__ == "__main__":
    main()
