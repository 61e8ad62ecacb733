"""The median stopping rule (``tuner.prune``) replayed on searches that ran without it.

    python bench/prune_replay.py STORE [STORE ...] [--min-trials 3 5] [--min-epochs 2 3] [--objective val_accuracy]

Each STORE is a search's MLflow store (a directory holding ``mlruns/mlflow.db``, as
``bench/targets.py --store DIR`` leaves one per search, or a tracking URI). A random search's
trials do not depend on each other (its draws ignore the scores, and every trial starts from the
search's seed), so replaying the pipeline's own rule (``pipeline.tuning.prune.decide``) over the
trials' recorded curves, in the order they ran, gives exactly the trials a search with the rule
would have stopped, the epoch each stops after, and the best trial it would have ended with. The
time a stopped trial saves is read from its run: from the time its stopping epoch was logged to the
run's end. Prints one row per search and setting: trial time with the rule against without,
the trials stopped, and whether the best trial (and so the final model) is the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List, Tuple


def trials(uri: str, objective: str) -> List[Tuple[str, float, List[float], List[float]]]:
    """Each trial of the store's search in the order it ran: (trial id, seconds, curve, seconds
    from each epoch's end to the run's end)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10000)
    out = []
    for run in sorted((r for r in runs if "tuner.trial_id" in r.data.tags), key=lambda r: r.info.start_time):
        history = sorted(client.get_metric_history(run.info.run_id, objective), key=lambda m: m.step)
        end = run.info.end_time
        out.append((run.data.tags["tuner.trial_id"], (end - run.info.start_time) / 1000.0,
                    [m.value for m in history], [(end - m.timestamp) / 1000.0 for m in history]))
    return out


def replay(search: List[Tuple[str, float, List[float], List[float]]], direction: str, min_trials: int, min_epochs: int) -> Any:
    """(seconds with the rule, seconds without, stopped trial ids, best trial without, best with)."""
    from pipeline.tuning.prune import best_by, decide

    finished: List[List[float]] = []
    total = saved = 0.0
    stopped, scores, full = [], {}, {}
    for trial_id, seconds, curve, left in search:
        total += seconds
        full[trial_id] = best_by(curve, len(curve), direction)
        stop = next((s for e in range(1, len(curve)) if (s := decide(curve[:e], finished, direction, min_trials, min_epochs))), None)
        if stop is None:
            finished.append(curve)
            scores[trial_id] = full[trial_id]
        else:
            stopped.append(trial_id)
            saved += left[stop.epoch - 1]
            scores[trial_id] = best_by(curve, stop.epoch, direction)
    pick = max if direction == "max" else min
    return total - saved, total, stopped, pick(full, key=full.get), pick(scores, key=scores.get), full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--min-trials", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--min-epochs", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--objective", default="val_accuracy")
    parser.add_argument("--direction", default="max", choices=["max", "min"])
    args = parser.parse_args()

    print("| search | min_trials | min_epochs | trial time: with the rule / without | saved | trials stopped | best trial: without / with |")
    print("|---|---|---|---|---|---|---|")
    for store in args.stores:
        path = Path(store)
        uri = f"sqlite:///{(path / 'mlruns' / 'mlflow.db').resolve()}" if path.is_dir() else store
        search = trials(uri, args.objective)
        for min_trials in args.min_trials:
            for min_epochs in args.min_epochs:
                with_rule, without, stopped, best, best_with, full = replay(search, args.direction, min_trials, min_epochs)
                same = "same" if best == best_with else f"**{best_with} ({full[best_with]:.4f})**"
                print(f"| {path.name or store} | {min_trials} | {min_epochs} | {with_rule:.0f} s / {without:.0f} s | {100 * (1 - with_rule / without):.0f}% "
                      f"| {len(stopped)} of {len(search)} | {best} ({full[best]:.4f}) / {same} |", flush=True)


if __name__ == "__main__":
    main()
