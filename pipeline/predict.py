"""`pipeline predict MODEL [TEXT ...] [--file PATH]`: labels and probabilities from a logged model.

MODEL is a run id (its logged model), a registered model name (its latest version), or a
``runs:/`` / ``models:/`` URI. Texts come from the command line, a file (one per line) or
standard input (``--file -``), one per ``\n`` line. One JSON object per text on standard
output. A ``tracking.*=`` or ``paths.*=`` key=value before any ``--`` is a setting (the store to
read); every other argument, and every one after ``--``, is a text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import List

from pipeline import heap, tracking
from pipeline.usage import argument_parser
from pipeline.config import compose_train
from pipeline.errors import DataError


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argument_parser("pipeline predict", __doc__.splitlines()[0])
    parser.add_argument("model", help="run id, registered model name, or runs:/ or models:/ URI")
    parser.add_argument("texts", nargs="*", help="texts to classify (key=value: tracking.uri=...)")
    parser.add_argument("--file", help="one text per line; - for standard input")
    args = parser.parse_intermixed_args(argv)  # texts and overrides before, between or after options
    # an override is a tracking.* or paths.* key=value before any `--`; everything else is a text
    end = argv.index("--") if "--" in argv else len(argv)
    settable = [a for a in argv[:end] if OVERRIDE.match(a)]
    args.overrides, texts = [], []
    for text in args.texts:
        if text in settable:
            settable.remove(text)
            args.overrides.append(text)
        else:
            texts.append(text)
    for n, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # bytes the shell passed that are not UTF-8 (Python's surrogateescape)
            raise DataError(f"text {n} on the command line is not UTF-8 (character {e.start + 1})") from None
    args.texts = texts
    return args


#: A setting of the store's (``tracking.uri=...``, ``paths.*``) among the texts: key=value.
OVERRIDE = re.compile(r"^[~+]*(tracking|paths)\.[A-Za-z0-9_.]+=")


def _read(path: str) -> List[str]:
    """One text per line, split at ``\n`` only (a form feed or U+2028 inside a text is part of it),
    from a file or standard input alike; a byte-order mark and a line's ``\r`` are not text."""
    if path == "-" and sys.stdin is None:  # started with standard input closed
        raise DataError("--file -: there is no standard input to read (it is closed); give a file")
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"no file {path}") from None
    except IsADirectoryError:
        raise DataError(f"--file {path} is a directory; give a file with one text per line") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(f"{'standard input' if path == '-' else path} is not UTF-8 text (byte {e.start})") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def main(argv: List[str]) -> int:
    import pandas as pd

    args = _parse(argv)
    texts = list(args.texts) + (_read(args.file) if args.file else [])
    if not texts and not args.file:
        raise DataError("no texts: give them as arguments or with --file PATH")
    # an empty --file (a filter upstream that matched nothing): no lines out, once the model is found
    cfg = compose_train(args.overrides)
    tracking.preflight(cfg.tracking, create=False)  # reading creates no store
    model = tracking.load_text_model(str(cfg.tracking.uri), args.model)
    heap.freeze()  # TensorFlow's objects, out of the collections its predictions run (pipeline/heap.py)
    if not texts:
        return 0
    predictions = model.predict(pd.DataFrame({"text": texts}))
    try:
        for text, row in zip(texts, predictions.itertuples(index=False)):
            print(json.dumps({"text": text, "label": row.label, "confidence": round(float(row.confidence), 6),
                              "probabilities": {k: round(float(v), 6) for k, v in row.probabilities.items()}}))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped (`| head`): a quiet end, as other tools make
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit fails no more
    return 0
