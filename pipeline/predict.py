"""`pipeline predict MODEL [TEXT ...] [--file PATH]`: labels and probabilities from a logged model.

MODEL is a run id (its logged model), a registered model name (its latest version), or a
``runs:/`` / ``models:/`` URI. Texts come from the command line, a file (one per line) or
standard input (``--file -``). One JSON object per text on standard output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List

from pipeline import tracking
from pipeline.usage import argument_parser
from pipeline.config import compose_train
from pipeline.errors import DataError


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argument_parser("pipeline predict", __doc__.splitlines()[0])
    parser.add_argument("model", help="run id, registered model name, or runs:/ or models:/ URI")
    parser.add_argument("texts", nargs="*", help="texts to classify (key=value: tracking.uri=...)")
    parser.add_argument("--file", help="one text per line; - for standard input")
    args = parser.parse_intermixed_args(argv)  # texts and overrides before, between or after options
    args.overrides = [t for t in args.texts if t.startswith(("tracking.", "paths."))]
    args.texts = [t for t in args.texts if t not in args.overrides]
    return args


def _read(path: str) -> List[str]:
    if path == "-":
        return [line.rstrip("\r\n") for line in sys.stdin]
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no file {path}") from None
    except IsADirectoryError:
        raise DataError(f"--file {path} is a directory; give a file with one text per line") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start})") from None


def main(argv: List[str]) -> int:
    import pandas as pd

    args = _parse(argv)
    texts = list(args.texts) + (_read(args.file) if args.file else [])
    if not texts:
        raise DataError("no texts: give them as arguments or with --file PATH")
    cfg = compose_train(args.overrides)
    tracking.preflight(cfg.tracking, create=False)  # reading creates no store
    model = tracking.load_text_model(str(cfg.tracking.uri), args.model)
    predictions = model.predict(pd.DataFrame({"text": texts}))
    for text, row in zip(texts, predictions.itertuples(index=False)):
        print(json.dumps({"text": text, "label": row.label, "confidence": round(float(row.confidence), 6),
                          "probabilities": {k: round(float(v), 6) for k, v in row.probabilities.items()}}))
    return 0
