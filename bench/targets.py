"""The README's targets table: the default search on each dataset, with nothing else set.

    python bench/targets.py [--datasets bbc_news sst2 mr subj] [--seeds 42] [--store DIR] [-- OVERRIDE ...]

Runs `pipeline tune dataset=X seed=S` (plus any overrides after `--`) as a user would, each in its
own store under --store (default: a temporary directory; each search's stdout.txt and stderr.txt
beside its store), and prints one row per search: the
final model's test accuracy with its 95% interval, the baseline's, the gap, the best trial's
validation score and its own test accuracy, the lowest score of a trial trained to its end (one
stopped early by ``tuner.prune`` reports where it stopped) against the collapse line
(majority-class rate plus half the gap to the baseline, on validation), and the wall time.

    python bench/targets.py --datasets bbc_news --seeds 1 2 3 -- dataset.split_seed=42

is the README's seed table: three searches scored on the same test split.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "sst2", "mr", "subj"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--store", help="keep the stores here (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="more overrides for every search (after --)")
    args = parser.parse_args()

    import numpy as np
    from mlflow import MlflowClient

    from pipeline import data
    from pipeline.config import compose_train

    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="targets-"))
    print("| dataset | seed | final test accuracy [95% interval] | baseline | final - baseline | best trial val / test "
          "| lowest trial val (collapse line) | minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for seed in args.seeds:
            work = root / f"{dataset}-seed{seed}"
            work.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "pipeline.cli", "tune", f"dataset={dataset}", f"seed={seed}", *args.overrides]
            start = time.perf_counter()
            result = subprocess.run(command, cwd=work, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True)
            minutes = (time.perf_counter() - start) / 60
            (work / "stdout.txt").write_text(result.stdout)  # the search's lines, its last one quoted in the README
            (work / "stderr.txt").write_text(result.stderr)
            if result.returncode != 0:
                print(f"| {dataset} | {seed} | failed ({result.returncode}): {result.stderr.strip().splitlines()[-1:]} |||||| {minutes:.1f} |", flush=True)
                continue
            client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            (parent,) = [r for r in runs if r.data.tags.get("pipeline.command") == "tune"]
            trials = [r for r in runs if "tuner.trial_id" in r.data.tags]
            m = parent.data.metrics
            # the collapse line on validation: the majority class's share there plus half the gap to
            # the baseline's validation accuracy
            cfg = compose_train([f"dataset={dataset}", f"seed={seed}", *args.overrides], config_name="tune")
            splits = data.load_splits(cfg.dataset, cfg.seed)
            majority = float(np.bincount(splits.label_ids(splits.val)).max() / len(splits.val))
            # a trial stopped early by tuner.prune reports the score it had reached when stopped, not
            # where its training ended: the collapse check is over the trials trained to their end
            ended = [r for r in trials if "tuner.pruned" not in r.data.tags]
            lowest = min((r.data.metrics.get("trial_score", np.nan) for r in ended), default=np.nan)
            stopped = f", {len(trials) - len(ended)} stopped" if len(ended) < len(trials) else ""
            # (baseline.enabled=false: no baseline, no collapse line)
            base_val, base_test = m.get("baseline.val_accuracy", np.nan), m.get("baseline.test_accuracy", np.nan)
            line = majority + (base_val - majority) / 2
            own = m.get("best_trial.test_accuracy")
            print(
                f"| {dataset} | {seed} | {m['test_accuracy']:.4f} [{m['test_accuracy_ci_low']:.4f}, {m['test_accuracy_ci_high']:.4f}] "
                f"| {base_test:.4f} | {m['test_accuracy'] - base_test:+.4f} "
                f"| {m['best_score']:.4f} / {'-' if own is None else f'{own:.4f}'} | {lowest:.4f} ({line:.4f}{stopped}) | {minutes:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
