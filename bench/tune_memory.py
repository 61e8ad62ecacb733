"""Memory over a long search: is the process as big after 20 trials as after 3?

Runs `pipeline tune` (one process, random search, the default LSTM family shrunk to a
BBC News slice) for --trials trials into a scratch store, then reads each trial's
`memory_rss_mb` / `memory_peak_mb` (logged by the pipeline at the end of every trial)
and writes bench/results/tune_memory.md and .json.

    python bench/tune_memory.py [--trials 20] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "pipeline.cli", "tune",
            f"tuner.max_trials={args.trials}", "dataset.max_samples=400", "training.epochs=2",
            "training.verbose=0", "tracking.log_model=false",
            "search_space.model.units={type:int,min:16,max:128,step:16}",
            "search_space.model.embedding_dim={type:choice,values:[16,32,64,128]}",
        ]
        started = time.monotonic()
        subprocess.run(command, cwd=tmp, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                       stdout=subprocess.DEVNULL)
        wall = time.monotonic() - started
        client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
        experiment = client.get_experiment_by_name("lstm-text-classification")
        runs = client.search_runs([experiment.experiment_id], filter_string="tags.`tuner.trial_id` != ''")
    trials = sorted(
        ((int(r.data.tags["tuner.trial_id"]), r.data.metrics) for r in runs if "memory_peak_mb" in r.data.metrics),
        key=lambda t: t[0],
    )
    if len(trials) < 4:
        raise SystemExit(f"only {len(trials)} trials recorded memory; need at least 4")
    by_id = dict(trials)
    third, last = by_id[2], by_id[trials[-1][0]]
    result = {
        "trials": len(trials),
        "wall_s": round(wall, 1),
        "peak_mb_after_3": round(third["memory_peak_mb"], 1),
        f"peak_mb_after_{len(trials)}": round(last["memory_peak_mb"], 1),
        "peak_growth": round(last["memory_peak_mb"] / third["memory_peak_mb"] - 1.0, 4),
        "rss_mb_after_3": round(third["memory_rss_mb"], 1),
        f"rss_mb_after_{len(trials)}": round(last["memory_rss_mb"], 1),
        "rss_growth": round(last["memory_rss_mb"] / third["memory_rss_mb"] - 1.0, 4),
        "rss_per_trial_mb": [round(m["memory_rss_mb"], 1) for _, m in trials],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    n = len(trials)
    table = "\n".join([
        f"# Memory over a {n}-trial search ({result['date']}, {result['machine']})",
        "",
        "| | after trial 3 | after trial %d | growth | target |" % n,
        "|---|---|---|---|---|",
        f"| peak RSS (MiB) | {result['peak_mb_after_3']} | {result[f'peak_mb_after_{n}']} | {result['peak_growth']:+.1%} | within 10% |",
        f"| RSS (MiB) | {result['rss_mb_after_3']} | {result[f'rss_mb_after_{n}']} | {result['rss_growth']:+.1%} | |",
        "",
        f"RSS after each trial (MiB): {', '.join(map(str, result['rss_per_trial_mb']))}",
        f"Wall time of the search: {result['wall_s']} s. Command: `python bench/tune_memory.py --trials {n}`",
        "",
    ])
    (out / "tune_memory.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
