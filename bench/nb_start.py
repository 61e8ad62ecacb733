"""The embedding's first vectors with naive-Bayes log-count ratios in them, played on validation
data: `bench/defaults.py` with a supervised start.

    python bench/nb_start.py [--datasets bbc_news sst2 mr subj] [--seeds 1 2 3] \
        --variant lsa= nb=+nb_start=true

Not a pipeline setting. In this process a variant with `+nb_start=true` starts its embedding from
the pipeline's LSA vectors (`model.embedding_init=lsa`) with the last k columns replaced by the
naive-Bayes log-count ratios of the texts the model trains on (Wang and Manning 2012's NBSVM
features, from binarised counts, smoothing 1): one column for two classes (class 1 against class
0), one per class against the rest otherwise, each scaled to the LSA entries' standard deviation
over the words the texts have. With mean pooling the model starts with the words' polarity in its
input, which the LSA vectors (no labels) do not carry. Labels of the training split only, as a fit
would see them. Everything else is `bench/defaults.py`: the pipeline's own prepare / build / fit,
early stopping on validation, the validation split scored; the test split is never read.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def nb_ratios(ids, labels, vocab_size: int, num_classes: int, alpha: float = 1.0):  # type: ignore[no-untyped-def]
    """(vocab_size, k) log-count ratios of the words in token ids ``ids`` (0 padding, 1 ``[UNK]``)."""
    import numpy as np
    from scipy import sparse

    from pipeline.vectors import LSA_SCALE

    texts, positions = ids.shape
    flat = ids.ravel().astype(np.int64)
    words = flat >= 2
    present = sparse.csr_matrix(
        (np.ones(int(words.sum())), (np.repeat(np.arange(texts), positions)[words], flat[words])), shape=(texts, vocab_size)
    )
    present.sum_duplicates()
    present.data[:] = 1.0
    seen = np.asarray(present.sum(axis=0)).ravel() > 0
    labels = np.asarray(labels).astype(np.int64)
    classes = [1] if num_classes == 2 else list(range(num_classes))
    out = np.zeros((vocab_size, len(classes)), dtype=np.float32)
    for j, c in enumerate(classes):
        p = alpha + np.asarray(present[labels == c].sum(axis=0)).ravel()
        q = alpha + np.asarray(present[labels != c].sum(axis=0)).ravel()
        r = np.log(p / p.sum()) - np.log(q / q.sum())
        std = float(r[seen].std()) if seen.any() else 0.0
        if std > 0:
            out[seen, j] = r[seen] / std * LSA_SCALE
    return out


def main() -> None:
    from pipeline import experiment

    lsa_start = experiment.Prepared.initial_embedding

    def initial_embedding(self, cfg):  # type: ignore[no-untyped-def]
        matrix = lsa_start(self, cfg)
        if matrix is None or not cfg.get("nb_start") or str(cfg.model.embedding_init) != "lsa":
            return matrix
        ids, labels = self.fit_split(cfg.training)
        ratios = nb_ratios(ids, labels, self.shape.vocab_size, self.shape.num_classes)
        k = ratios.shape[1]
        if k >= matrix.shape[1]:
            return matrix
        matrix = matrix.copy()
        matrix[:, -k:] = ratios
        return matrix

    experiment.Prepared.initial_embedding = initial_embedding  # this process only
    from defaults import run_patched  # bench/defaults.py, beside this script

    run_patched()


if __name__ == "__main__":
    main()
