"""What the TF-IDF + logistic regression baseline costs and scores on each dataset's own splits.

    python bench/baseline_cost.py [--datasets bbc_news sst2 mr subj sst2_phrases]

Prints one row per dataset: split sizes, the C chosen on validation, validation and test accuracy,
and the seconds the fit took (vectorize, one fit per C, score), median of --repeats runs. With
`--log`, also the seconds and megabytes to log the fitted model into a run of a temporary MLflow
store as a search does (`baseline/model.skops`), in the form logged today (`baseline.stored`:
vocabularies as arrays) and as fitted (each vocabulary a dict, logged so before 2026-11-27),
one after the other in each repetition; and that the two files, read back, predict the same.
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
    parser.add_argument("--log", action="store_true", help="also time logging the fitted model, in both forms")
    args = parser.parse_args()

    from pipeline import baseline, data
    from pipeline.config import compose_train

    logged = " | log s, stored / as fitted | MB stored / as fitted |" if args.log else " |"
    print(f"| dataset | train / val / test | C | val accuracy | test accuracy | seconds (median){logged}")
    print(f"|---|---|---|---|---|---|{'---|---|' if args.log else ''}")
    for name in args.datasets:
        cfg = compose_train([f"dataset={name}"], config_name="tune")
        splits = data.load_splits(cfg.dataset, cfg.seed)
        seconds, logs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fitted = baseline.fit(splits, cfg.baseline)
            seconds.append(time.perf_counter() - start)
            if args.log:
                logs.append(_log_both(fitted.model, splits.test.texts))
        sizes = f"{len(splits.train)} / {len(splits.val)} / {len(splits.test)}"
        logged = " |"
        if args.log:
            logged = (f" | {statistics.median(s for s, _, _, _ in logs):.2f} / {statistics.median(f for _, f, _, _ in logs):.2f}"
                      f" | {logs[0][2] / 1e6:.1f} / {logs[0][3] / 1e6:.1f} |")
        print(f"| {name} | {sizes} | {fitted.C:g} | {fitted.val_accuracy:.4f} | {fitted.test['accuracy']:.4f} | {statistics.median(seconds):.1f}{logged}",
              flush=True)


def _log_both(model, texts) -> tuple:
    """Seconds to log ``model`` as a search does and as fitted, into one run of a temporary store,
    and the two files' sizes; checks that both files, read back, predict the same."""
    import tempfile
    from pathlib import Path

    import mlflow
    import numpy as np
    import skops.io

    from pipeline import baseline, tracking
    from pipeline.config import compose_train

    with tempfile.TemporaryDirectory() as tmp:
        store = compose_train([f"paths.mlruns_dir={tmp}", f"tracking.uri=sqlite:///{tmp}/mlflow.db"]).tracking
        tracking.configure(store)
        with tracking.tracked_run(store, "baseline", {}):
            start = time.perf_counter()
            tracking.log_skops(baseline.stored(model), "stored/model.skops")
            stored = time.perf_counter() - start
            start = time.perf_counter()
            tracking.log_skops(model, "fitted/model.skops")
            fitted = time.perf_counter() - start
            root = Path(mlflow.get_artifact_uri().removeprefix("file://"))
        files = [root / form / "model.skops" for form in ("stored", "fitted")]
        probabilities = [skops.io.load(f, trusted=skops.io.get_untrusted_types(file=f)).predict_proba(list(texts)) for f in files]
        assert np.array_equal(*probabilities), "the two forms predict differently"
        return stored, fitted, files[0].stat().st_size, files[1].stat().st_size


if __name__ == "__main__":
    main()
