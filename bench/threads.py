"""A search's wall time in one process against two workers on this host, by TensorFlow thread count.

    python bench/threads.py [--dataset bbc_news] [--repeats 2] [--variants one two_shared two_split] \
        [-- override ...]

Runs the same `pipeline tune` (each run in its own empty directory: its own store and tuner
project) as three variants, interleaved: `one` (one process, TensorFlow's default pools, every
core), `two_shared` (`tuner.workers=2`, each worker's pools at every core, as before the workers
got their share) and `two_split` (`tuner.workers=2`, each worker at the cores / 2: the default).
Prints the median wall time of each and its ratio to `one`, and checks that every variant's trials
drew the same values and scored the same validation accuracy (on the 2-core machines here they did:
the thread count changed how fast a fit ran, not what it computed). Only validation scores are read. The default search is cut to 4
trials of 3 epochs, no baseline, and the best trial's own model as the final one, so that the
trials are what is timed; overrides after `--` replace or add to these.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time

CUT = ["tuner.max_trials=4", "training.epochs=3", "baseline.enabled=false", "tuner.final.refit=false",
       "tuner.final.ensemble.seeds=[]", "tuner.final.registered_model_name=null", "tracking.log_model=false"]
TRIAL = re.compile(r"trial (\d+)/\d+ (.*?) (val_accuracy=[0-9.]+)")


def run(args: list) -> tuple:
    with tempfile.TemporaryDirectory() as where:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "tune", *args], cwd=where, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"pipeline tune {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, sorted(set(m.groups() for m in TRIAL.finditer(done.stdout)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["one", "two_shared", "two_split"])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from pipeline.tuning.distributed import cores  # what the workers divide

    common = [f"dataset={args.dataset}", *CUT, *args.overrides]
    variants = {
        "one": [],
        "two_shared": ["tuner.workers=2", f"training.threads={cores()}"],
        "two_split": ["tuner.workers=2"],
    }
    variants = {name: variants[name] for name in args.variants}
    seconds: dict = {name: [] for name in variants}
    trials: dict = {}
    for _ in range(args.repeats):
        for name, extra in variants.items():
            took, drawn = run([*common, *extra])
            seconds[name].append(took)
            trials.setdefault(name, drawn)
            print(f"{name}: {took:.1f} s", file=sys.stderr, flush=True)
    one = statistics.median(seconds["one"])
    print(f"`pipeline tune {' '.join(common)}`, {cores()} cores, {args.repeats} repetitions interleaved\n")
    print("| variant | wall s (median) | each | one / variant |")
    print("|---|---:|---|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.1f} | {' / '.join(f'{v:.1f}' for v in values)} | {one / statistics.median(values):.2f}x |")
    same = all(t == trials["one"] for t in trials.values())
    print(f"\ntrials (values, validation accuracy) the same in every variant: {same}")
    for name, drawn in trials.items():
        if not same or name == "one":
            print(f"{name}: " + "; ".join(" ".join(t) for t in drawn))


if __name__ == "__main__":
    main()
