"""What Python's full garbage collections cost a command, with and without freezing its imports.

    python bench/gc_freeze.py [--repeats 3] [--main]

Keras's ``clear_session`` and Keras Tuner's ``_try_build`` each run ``gc.collect()`` before every
model; ``pipeline/heap.py`` keeps the collector off while a command starts (its imports) and then
freezes the objects alive before its first model (TensorFlow's, Keras's, MLflow's) so that those
collections skip them: "on" is both, "off" neither. Each row runs one command in a new process
and an empty directory, ``heap.ENABLED`` off and on taking turns within each repetition: the
command's wall seconds and the seconds inside the collector's full (generation 2) collections, both
medians, and the final model's test accuracy from the command's last line, which must be the same
both ways (a collection frees memory; it never changes what is computed): the script exits 1 if not. Jobs: a `pipeline train` and a 3-trial
`pipeline tune` at the tests' size (`+debug=fast`, 200 BBC News articles), and with ``--main`` the
README's main job, `pipeline tune` as it is (minutes each).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

#: In the child: the collector's own clock around every full collection, printed at exit.
CHILD = r"""
import atexit, gc, sys, time
from pipeline import heap
heap.ENABLED = sys.argv[1] == "on"
spent, began = [0.0, 0], [0.0]
def clock(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - began[0]
        spent[1] += 1
gc.callbacks.append(clock)
atexit.register(lambda: print(f"GC_FULL {spent[0]:.3f} {spent[1]}", file=sys.stderr))
from pipeline.cli import main
code = main(sys.argv[2:])
sys.stdout.flush()
sys.exit(code)
"""

SMALL = ["+debug=fast", "dataset.max_samples=200"]
JOBS: Dict[str, List[str]] = {
    "train, tests' size": ["train", *SMALL, "tracking.log_model=false"],
    "tune, 3 trials, tests' size": ["tune", *SMALL, "training.epochs=2", "search_space=tiny", "tuner.cv_folds=1", "tuner.max_trials=3"],
}
MAIN = {"tune, the README's main job": ["tune"]}


def _once(args: List[str], on: bool) -> Tuple[float, float, int, str]:
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, "on" if on else "off", *args], cwd=cwd,
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    full = re.search(r"GC_FULL (\S+) (\d+)", done.stderr)
    assert full, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    found = re.findall(r"test_accuracy=\d\.\d+(?: \[[^]]*\])?", last)  # the final model's, not the best trial's
    if not found:
        sys.exit(f"error: {' '.join(args)}: no test_accuracy on its last line: {last[:200]}")
    return seconds, float(full[1]), int(full[2]), found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--main", action="store_true", help="also the README's main job (minutes a run)")
    args = parser.parse_args()
    jobs = {**JOBS, **(MAIN if args.main else {})}
    print("| command | seconds, off / on (median) | ratio | full collections: seconds, off / on (count) | result, off / on |")
    print("|---|---|---|---|---|")
    for name, command in jobs.items():
        runs: Dict[bool, List[Tuple[float, float, int, str]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for on in (False, True):
                runs[on].append(_once(command, on))
        med = {on: statistics.median(r[0] for r in runs[on]) for on in runs}
        gc_s = {on: statistics.median(r[1] for r in runs[on]) for on in runs}
        counts = {on: statistics.median(r[2] for r in runs[on]) for on in runs}
        results = {on: sorted({r[3] for r in runs[on]}) for on in runs}
        print(f"| {name} | {med[False]:.1f} / {med[True]:.1f} | {med[True] / med[False]:.2f} | "
              f"{gc_s[False]:.1f} ({counts[False]:.0f}) / {gc_s[True]:.1f} ({counts[True]:.0f}) | "
              f"{', '.join(results[False])} / {', '.join(results[True])} |", flush=True)
        if results[False] != results[True]:
            sys.exit(f"error: {name}: the final test accuracy differs with the freeze: {results[False]} / {results[True]}")


if __name__ == "__main__":
    main()
