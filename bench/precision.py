"""Seconds per training epoch in float32 and in Keras's ``mixed_bfloat16`` policy, side by side.

    python bench/precision.py [--sizes 128x128 256x192] [--repeats 3] [--epochs 3]

Embedding (padding masked) -> LSTM -> Dense (kept in float32) on random token ids, 1,728 texts of
150 tokens in 5 classes (BBC News's shape), batch 64, Adam. Each (size, policy) trains in its own
process for --epochs epochs; its time is the median epoch after the first (which traces the
model). The processes take turns, --repeats rounds; the table gives the median over rounds. What
the CPU offers for bfloat16 (AVX-512 BF16, AMX) is printed first: without it, bfloat16 is
emulated. Speed only: no accuracy is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
POLICIES = ["float32", "mixed_bfloat16"]


def epoch_seconds(embedding: int, units: int, policy: str, epochs: int) -> float:
    """One process's measurement: the median epoch after the first."""
    import keras
    import numpy as np

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            seconds.append(time.perf_counter() - self.start)

    seconds: list = []
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 20000, size=(1728, 150)), rng.integers(0, 5, size=1728)
    model = keras.Sequential([
        keras.Input((150,), dtype="int32"),
        keras.layers.Embedding(20000, embedding, mask_zero=True, dtype=policy),
        keras.layers.LSTM(units, dtype=policy),
        keras.layers.Dense(5, activation="softmax", dtype="float32"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[Clock()])
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["128x128", "256x192"], help="EMBEDDINGxUNITS")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("EMBEDDING", "UNITS", "POLICY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(epoch_seconds(int(args.one[0]), int(args.one[1]), args.one[2], args.epochs)))
        return

    flags = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
    print(f"CPU bfloat16 instructions: {', '.join(sorted(f for f in flags if 'bf16' in f or f.startswith('amx'))) or 'none'}")
    print("| embedding x units | " + " | ".join(f"{p} epoch s" for p in POLICIES) + " | float32 / mixed_bfloat16 |")
    print("|---|" + "---|" * (len(POLICIES) + 1))
    for size in args.sizes:
        embedding, units = size.split("x")
        seconds: dict = {p: [] for p in POLICIES}
        for _ in range(args.repeats):
            for policy in POLICIES:
                out = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--one", embedding, units, policy],
                                     check=True, capture_output=True, text=True).stdout
                seconds[policy].append(json.loads(out.strip().splitlines()[-1]))
        medians = {p: statistics.median(v) for p, v in seconds.items()}
        print(f"| {embedding} x {units} | " + " | ".join(f"{medians[p]:.2f}" for p in POLICIES)
              + f" | {medians['float32'] / medians['mixed_bfloat16']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
