"""What the TF-IDF + logistic regression baseline costs and scores on each dataset's own splits.

    python bench/baseline_cost.py [--datasets bbc_news sst2 mr subj sst2_phrases]

Prints one row per dataset: split sizes, the C chosen on validation, validation and test accuracy,
and the seconds the fit took (vectorize, one fit per C, score), median of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "sst2", "mr", "subj", "sst2_phrases"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pipeline import baseline, data
    from pipeline.config import compose_train

    print("| dataset | train / val / test | C | val accuracy | test accuracy | seconds (median) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        cfg = compose_train([f"dataset={name}"], config_name="tune")
        splits = data.load_splits(cfg.dataset, cfg.seed)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fitted = baseline.fit(splits, cfg.baseline)
            seconds.append(time.perf_counter() - start)
        sizes = f"{len(splits.train)} / {len(splits.val)} / {len(splits.test)}"
        print(f"| {name} | {sizes} | {fitted.C:g} | {fitted.val_accuracy:.4f} | {fitted.test['accuracy']:.4f} | {statistics.median(seconds):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
