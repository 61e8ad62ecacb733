"""Word vectors an embedding starts from: from a local file (GloVe text, word2vec text or
binary), or fit on the texts a model trains on (LSA: no file, nothing downloaded).

Only the vectors of words in the vocabulary are kept from a file, so a large file costs one
pass and little memory. Words missing from the file keep a small random vector (seeded).
"""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from pipeline.errors import DataError
from pipeline.readers import whole_number

FORMATS = ("auto", "glove", "word2vec", "word2vec_binary")


def _detect(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise DataError(f"unknown model.pretrained.format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    with path.open("rb") as f:
        head = f.read(4096)
    first = head.split(b"\n", 1)[0].split()
    has_header = len(first) == 2 and all(p.isdigit() for p in first)
    if not has_header:
        return "glove"
    body = head.split(b"\n", 1)[1] if b"\n" in head else b""
    try:
        body.decode("utf-8")
        return "word2vec"
    except UnicodeDecodeError:
        return "word2vec_binary"


def file_dimension(path: str, fmt: str) -> int:
    """How many values each of the file's vectors has, from its first line (a word2vec header's
    second number, else the numbers the first line ends with): what ``model.embedding_dim`` must be, known
    before any data is read or run opened. Raises :class:`DataError` for a file that gives none."""
    p = Path(path)
    kind = _detect(p, fmt)
    with p.open("rb") as f:
        first = f.readline(1 << 20).decode("utf-8", errors="replace").rstrip()
    parts = first.split(" ")
    if kind != "glove":
        if len(parts) == 2 and all(whole_number(v) is not None for v in parts) and int(parts[1]) > 0:
            return int(parts[1])
        raise DataError(f"{p}: the first line is not a word2vec header (a count and a dimension)")
    values = 0  # the numbers at the line's end: a first word with spaces in it is all before them
    for field in reversed(parts[1:]):
        try:
            float(field)
        except ValueError:
            break
        values += 1
    if values == 0:
        raise DataError(f"{p}: line 1: not a word followed by numbers" if len(parts) > 1 else f"{p}: no word vectors found")
    return values


_CHECKED: set = set()


def check_file(path: str, fmt: str) -> None:
    """Every line of a text vectors file as :func:`load_embedding_matrix` will read it: a word and
    the file's number of values, each a number (a line whose word has spaces in it passed over, as
    there). Run with the settings, before any store, run or tuner project exists, so that a bad line
    far down the file is one error line then rather than after them (~1.6 s for glove.6B.50d's
    171 MB; each file once per process while unchanged). A word2vec binary file is read as is."""
    p = Path(path).expanduser()
    try:
        stat = p.stat()
        key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns, fmt)
        if key not in _CHECKED:
            _check_lines(p, _detect(p, fmt))
    except OSError as e:
        raise DataError(f"{p}: cannot be read: {e.strerror or type(e).__name__}") from None
    _CHECKED.add(key)


def _check_lines(p: Path, kind: str) -> None:
    if kind != "word2vec_binary":
        _read_text(p, {}, header=kind == "word2vec", dim=file_dimension(str(p), kind), every=True)


def _read_text(path: Path, wanted: Dict[str, int], header: bool, dim: int, every: bool = False) -> Dict[int, np.ndarray]:
    """Each line a word and its ``dim`` values; a word with spaces in it (glove.840B has a few,
    such as ``. . .``) is all but the last ``dim`` fields, and no vocabulary word (the tokenizer
    splits on whitespace), so it is passed over rather than refused. The values of the ``wanted``
    words are read (``every``: every line's, checked and dropped)."""
    found: Dict[int, np.ndarray] = {}
    with path.open("r", encoding="utf-8-sig", errors="replace") as f:  # -sig: a byte-order mark is not part of the first word
        for n, line in enumerate(f, start=1):
            if header and n == 1:
                continue
            parts = line.rstrip().split(" ")
            if len(parts) < 2:
                continue
            if len(parts) - 1 < dim:
                raise DataError(f"{path}: line {n}: {len(parts) - 1} values, expected {dim}")
            if len(parts) - 1 > dim:  # a word with spaces in it
                continue
            idx = wanted.get(parts[0])
            new = idx is not None and idx not in found
            if new or every:
                try:
                    vec = np.asarray(parts[1:], dtype="float32")
                except ValueError:
                    raise DataError(f"{path}: line {n}: not a word followed by numbers") from None
                if new:
                    found[idx] = vec
    return found


def _read_binary(path: Path, wanted: Dict[str, int]) -> Tuple[Dict[int, np.ndarray], int]:
    found: Dict[int, np.ndarray] = {}
    with path.open("rb") as f:
        count, dim = (int(v) for v in f.readline().split())
        width = 4 * dim
        for _ in range(count):
            word = bytearray()
            while (ch := f.read(1)) not in (b" ", b""):
                if ch != b"\n":
                    word.extend(ch)
            vec = f.read(width)
            if len(vec) < width:
                raise DataError(f"{path}: truncated word2vec binary file")
            idx = wanted.get(word.decode("utf-8", errors="replace"))
            if idx is not None and idx not in found:
                found[idx] = np.frombuffer(vec, dtype="<f4").copy()
    return found, dim


def load_embedding_matrix(path: str, fmt: str, vocabulary: List[str], seed: int) -> Tuple[np.ndarray, float]:
    """A (len(vocabulary), dim) matrix and the share of real vocabulary words the file covers.

    Row 0 (padding) is zero; ``[UNK]`` and uncovered words get small seeded random vectors.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"pretrained vectors file not found: {p}")
    wanted = {word: i for i, word in enumerate(vocabulary) if i >= 2}
    kind = _detect(p, fmt)
    if kind == "word2vec_binary":
        found, dim = _read_binary(p, wanted)
    else:
        dim = file_dimension(path, kind)
        found = _read_text(p, wanted, header=kind == "word2vec", dim=dim)
    if dim == 0:
        raise DataError(f"{p}: no word vectors found")
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.05, size=(len(vocabulary), dim)).astype("float32")
    matrix[0] = 0.0
    for idx, vec in found.items():
        matrix[idx] = vec
    coverage = len(found) / max(1, len(wanted))
    return matrix, coverage


#: What an LSA vector's entries are scaled to: their standard deviation over the columns the texts
#: span (README "How the defaults were chosen": 0.3, 0.5 and 2.0 read BBC News lower).
LSA_SCALE = 1.0
_LSA_CACHE: "collections.OrderedDict[tuple, Optional[np.ndarray]]" = collections.OrderedDict()
_LSA_CACHE_SIZE = 8


def lsa_vectors(ids: np.ndarray, vocab_size: int, dim: int) -> Optional[np.ndarray]:
    """A (vocab_size, dim) matrix of word vectors fit on token ids ``ids`` (texts x positions, 0 the
    padding, 1 ``[UNK]``, each below ``vocab_size``): latent semantic analysis, scikit-learn's TF-IDF
    weights (sublinear term frequencies) of the texts' words and a truncated SVD of them, each word's
    row its right singular vectors times the singular values, the columns the texts span scaled to
    entries of standard deviation :data:`LSA_SCALE`. None where there is nothing to fit (fewer than
    two texts or two distinct words): the caller's random initialiser then.

    Words that co-occur in the same texts get similar vectors, which an embedding learned from a
    few thousand labelled texts alone does not. A function of the texts and ``dim`` only (the SVD's
    seed is fixed), so a trial, its rerun and every seed of a search share one matrix. Padding,
    ``[UNK]``, words none of the texts has and the dimensions past what the texts span (fewer texts
    or words than ``dim``) are zero. The last eight matrices are kept for the process (a search
    builds a model per trial, and a fold's or a refit's texts are other texts).
    """
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    ids = np.ascontiguousarray(ids)
    key = (hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest(), ids.shape, str(ids.dtype), int(vocab_size), int(dim), LSA_SCALE)
    if key in _LSA_CACHE:
        _LSA_CACHE.move_to_end(key)
        return _LSA_CACHE[key]
    texts, positions = ids.shape
    flat = ids.ravel().astype(np.int64)
    words = flat >= 2
    counts = sparse.csr_matrix(
        (np.ones(int(words.sum()), dtype=np.float64), (np.repeat(np.arange(texts), positions)[words], flat[words])),
        shape=(texts, vocab_size),
    )
    counts.sum_duplicates()
    seen = np.diff(counts.tocsc().indptr) > 0
    rank = min(dim, texts - 1, int(seen.sum()) - 1)
    matrix: Optional[np.ndarray] = None
    if rank >= 1:
        weights = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
        svd = TruncatedSVD(rank, algorithm="randomized", random_state=0).fit(weights)
        vectors = svd.components_.T * svd.singular_values_
        std = float(vectors.std())
        matrix = np.zeros((vocab_size, dim), dtype=np.float32)
        if std > 0:
            matrix[:, :rank] = vectors / std * LSA_SCALE
        matrix[~seen] = 0.0  # the SVD leaves round-off there
        matrix.setflags(write=False)
    _LSA_CACHE[key] = matrix
    while len(_LSA_CACHE) > _LSA_CACHE_SIZE:
        _LSA_CACHE.popitem(last=False)
    return matrix
