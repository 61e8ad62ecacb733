"""The embedding's first vectors from words' neighbours instead of the texts they share, played on
validation data: `bench/defaults.py` per variant.

    python bench/embeddings.py [--datasets sst2 mr subj bbc_news] [--seeds 1 2 3] \
        [--variants today w2 w5]

Not a pipeline setting (tried and not adopted, README "How the defaults were chosen"). In this
process, per variant:

- `today`: the pipeline's LSA start (`pipeline.vectors.lsa_vectors`: TF-IDF of the training texts'
  words and a truncated SVD: words that share texts get similar vectors);
- `w2`, `w5`: the SVD of the positive pointwise mutual information of words within 2 (5) tokens
  of each other in the training texts, context counts smoothed to the power 0.75 and each word's
  row its left singular vectors times the square roots of the singular values (Levy, Goldberg and
  Dagan 2015's recommended SVD-PPMI; words used alike get similar vectors, as word2vec's do),
  scaled as the LSA vectors are (entries of standard deviation 1.0).

Everything else is `bench/defaults.py`'s: the pipeline's own prepare / build / fit, early
stopping on validation, the validation split scored; the test split is never read. Prints the
median and the range of validation accuracy over the seeds, the epochs and the seconds per fit.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from defaults import interleaved_main  # bench/defaults.py, beside this script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONTEXT_SMOOTHING = 0.75


def window_vectors(ids: np.ndarray, vocab_size: int, dim: int, window: int) -> Optional[np.ndarray]:
    """SVD-PPMI word vectors of the token ids ``ids`` (texts x positions; 0 padding, 1 [UNK])."""
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD

    rows, cols = [], []
    for offset in range(1, window + 1):
        left, right = ids[:, :-offset].ravel(), ids[:, offset:].ravel()
        both = (left >= 2) & (right >= 2)
        rows += [left[both], right[both]]
        cols += [right[both], left[both]]
    r, c = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
    if len(r) == 0:
        return None
    counts = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(vocab_size, vocab_size))
    counts.sum_duplicates()
    total = counts.sum()
    word = np.asarray(counts.sum(axis=1)).ravel()
    context = np.asarray(counts.sum(axis=0)).ravel() ** CONTEXT_SMOOTHING
    context_p = context / context.sum()
    coo = counts.tocoo()
    pmi = np.log(coo.data / total) - np.log(word[coo.row] / total) - np.log(context_p[coo.col])
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)
    seen = word > 0
    rank = min(dim, int(seen.sum()) - 1)
    if rank < 1:
        return None
    svd = TruncatedSVD(rank, algorithm="randomized", random_state=0)
    left_vectors = svd.fit_transform(ppmi) / svd.singular_values_  # U
    vectors = left_vectors * np.sqrt(svd.singular_values_)
    std = float(vectors[seen].std())
    matrix = np.zeros((vocab_size, dim), dtype=np.float32)
    if std > 0:
        matrix[:, :rank] = vectors / std
    matrix[~seen] = 0.0
    return matrix


def _patch(variant: str) -> None:
    from pipeline import vectors

    vectors.lsa_vectors = _ORIGINAL["lsa"]
    if variant.startswith("w") and variant[1:].isdigit():
        window = int(variant[1:])
        vectors.lsa_vectors = lambda ids, vocab_size, dim: window_vectors(np.ascontiguousarray(ids), vocab_size, dim, window)
    elif variant != "today":
        raise SystemExit(f"error: unknown variant {variant!r} (today, or wN for a window of N tokens)")


_ORIGINAL: dict = {}


def _setup() -> None:
    from pipeline import vectors

    _ORIGINAL.update(lsa=vectors.lsa_vectors)


def main() -> None:
    interleaved_main(__doc__.splitlines()[0], ["today", "w2", "w5"], _patch, _setup)


if __name__ == "__main__":
    main()
