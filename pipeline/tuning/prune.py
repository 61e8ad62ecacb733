"""The median stopping rule: a trial that is behind the finished ones stops early (``tuner.prune``).

After each epoch of a trial, its best score so far is compared with the best scores the search's
finished trials had reached by the same epoch (a trial that ended sooner counts with its best). Once
``min_trials`` of them have finished, and after at least ``min_epochs`` epochs, a trial strictly worse
than their median stops there (Golovin et al. 2017, "Google Vizier"; Optuna's ``MedianPruner``). It
ends as a completed trial with the score it reached: the ranking, the Bayesian oracle and the trial's
run see that score, and its run says where and why it stopped (the ``tuner.pruned`` tag).

Each finished trial's curve is kept in the tuner project (``curves/trial<id>.json``, written whole,
whatever the rule): workers on one file system see each other's, and a resumed search compares
with the trials its first run finished (a project from before the curves were kept has none of its
first trials': they are not compared with). A trial run again is never compared with its own
curve. A stopped trial's curve is kept too, and is not among the ones compared with: it did not
train to its end. The decisions of one process's search follow from the trials before them, so a
search stops the same trials each time; with several workers they depend on which trials
finished first.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from pipeline.tuning.compat import write_json

FOLDER = "curves"


@dataclass(frozen=True)
class Stop:
    """Why a trial stopped: after ``epoch`` epochs its best ``score`` was worse than ``median``,
    the median of ``trials`` finished trials' best scores by then."""

    epoch: int
    score: float
    median: float
    trials: int

    def describe(self, objective: str) -> str:
        """``stopped after epoch 3: val_accuracy 0.7840 behind 0.8780, the median of 5 finished trials by then``."""
        return (f"stopped after epoch {self.epoch}: {objective} {self.score:.4f} behind {self.median:.4f}, "
                f"the median of {self.trials} finished trials by then")


def best_of(values: List[float], direction: str) -> float:
    """The best of a metric's per-epoch values (NaN when there are none): a trial's score."""
    if not values:
        return float("nan")
    return float(max(values) if direction == "max" else min(values))


def best_by(values: List[float], epochs: int, direction: str) -> float:
    """The best of the first ``epochs`` values (all of them if there are fewer); NaN (a diverged
    loss) is never best, and the best of nothing but NaN is NaN."""
    return best_of([v for v in values[:epochs] if not math.isnan(v)], direction)


def decide(values: List[float], finished: List[List[float]], direction: str, min_trials: int, min_epochs: int) -> Optional[Stop]:
    """Whether a trial whose objective was ``values`` in its epochs so far stops now: after at
    least ``min_epochs`` epochs, once ``min_trials`` finished trials have a score by then, when its
    best so far is worse than their median (a trial with nothing but NaN so far is behind any)."""
    epoch = len(values)
    peers = [b for b in (best_by(curve, epoch, direction) for curve in finished) if not math.isnan(b)]
    if epoch < min_epochs or len(peers) < max(1, min_trials):
        return None
    score, median = best_by(values, epoch, direction), float(statistics.median(peers))
    behind = math.isnan(score) or (score < median if direction == "max" else score > median)
    return Stop(epoch, score, median, len(peers)) if behind else None


def _records(project: Path) -> Iterator[Dict[str, Any]]:
    """The project's curve files, read; one being replaced by another process, or not ours, is skipped."""
    for path in sorted((Path(project) / FOLDER).glob("trial*.json")):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue


def finished_curves(project: Path, other_than: Optional[str] = None) -> List[List[float]]:
    """The objective curves of the project's trials that trained to their end (but trial
    ``other_than``'s: a trial run again, its curve of an earlier run kept, is not its own peer)."""
    return [[float(v) for v in r["curve"]] for r in _records(project)
            if r.get("stopped") is None and r.get("curve") and (other_than is None or str(r.get("trial_id")) != str(other_than))]


def stopped_epochs(project: Path) -> Dict[str, int]:
    """Trial id -> the epoch after which the rule stopped it, for the project's stopped trials."""
    return {str(r["trial_id"]): int(r["stopped"]["epoch"]) for r in _records(project) if r.get("stopped")}


def record(project: Path, trial_id: str, curve: List[float], stop: Optional[Stop]) -> None:
    """A finished trial's objective curve, and where it was stopped (None: it trained to its end)."""
    folder = Path(project) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"trial{trial_id}.json", {
        "trial_id": str(trial_id), "curve": [float(v) for v in curve],
        "stopped": None if stop is None else {"epoch": stop.epoch, "median": stop.median, "trials": stop.trials},
    })


def callback(project: Path, trial_id: str, objective: str, direction: str, min_trials: int, min_epochs: int) -> Tuple[Any, List[Stop]]:
    """A Keras callback that applies the rule to trial ``trial_id`` after each epoch (reading the
    finished trials then), and the list its stop is appended to. The list is shared by the copies
    Keras Tuner makes of a trial's callbacks for each execution (``executions_per_trial``): once
    one execution is stopped, the others stop after the same epoch."""
    import keras

    stops: List[Stop] = []

    class MedianStop(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.values: List[float] = []

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs is None or objective not in logs:
                return
            self.values.append(float(logs[objective]))
            if stops:  # an earlier execution of this trial was stopped: this one stops where it did
                if len(self.values) >= stops[0].epoch:
                    self.model.stop_training = True
                return
            # too soon to stop; or the fit ends after this epoch anyway: its last, or early stopping
            # (which runs first) ended it. The finished trials' curves are read only past these.
            if len(self.values) < min_epochs or len(self.values) >= int(self.params.get("epochs") or 0) or self.model.stop_training:
                return
            stop = decide(self.values, finished_curves(project, other_than=trial_id), direction, min_trials, min_epochs)
            if stop is not None:
                stops.append(stop)
                self.model.stop_training = True

    return MedianStop(), stops
