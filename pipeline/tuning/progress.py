"""A search's progress: one line on stdout as each trial starts, and one as it ends.

::

    trial 3/10 units=192 embedding_dim=128 ...
    trial 3/10 units=192 embedding_dim=128 val_accuracy=0.8606 (best 0.8606, trial 1) 14 s, about 2 min left
    trial 7/10 units=64 embedding_dim=32 val_accuracy=0.7840 (best 0.9577, trial 5), stopped after epoch 3:
      val_accuracy 0.7840 behind 0.8780, the median of 5 finished trials by then, 9 s, about 1 min left
    trial 2/10 units=64 embedding_dim=256 val_accuracy=0.7131 (mean of 5 folds, sd 0.0213) (best 0.7131, trial 2) 41 s, about 5 min left

A trial's number counts from 1 in the order Keras Tuner created the trials (its trial id + 1; its
MLflow run is ``trial-<id>``), so a resumed search goes on counting from the trials it had, and an
interrupted trial run again keeps its number. Values are named by the last part of their config
path (``model.units`` -> ``units``) unless two would share a name. The time left is the mean time of
the trials this process ran times the trials left; Hyperband decides its number of trials as it goes,
so its lines give each trial's epochs and the time so far instead. A failed trial says FAILED and
its error in one line; one stopped early by ``tuner.prune`` says after which epoch and why; one
scored on folds (``tuner.cv_folds``), over how many and its standard deviation over them. Keras
Tuner's own display is off (``search(verbose=0)``), and Keras's per-epoch lines are off during a
search unless ``training.verbose`` says otherwise (conf/tune.yaml).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO, Tuple


def number(trial_id: str) -> str:
    """A trial's number as its lines show it: Keras Tuner's id (``"02"``) + 1 (``"3"``)."""
    return str(int(trial_id) + 1) if str(trial_id).isdigit() else str(trial_id)


def named(trial_id: Any) -> str:
    """``trial 5 (run trial-04)``: a trial by the number its lines give it, and its MLflow run's name."""
    return f"trial {number(str(trial_id))} (run trial-{trial_id})"


def short_names(names: List[str]) -> Dict[str, str]:
    """Each config path by its last part (``model.units`` -> ``units``), or whole where two share it."""
    last = [n.rsplit(".", 1)[-1] for n in names]
    return {n: (s if last.count(s) == 1 else n) for n, s in zip(names, last)}


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def duration(seconds: float) -> str:
    """``14 s``, ``2 min``, ``1.5 h``: as precise as a glance needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """The lines of one process's trials: started, then ended with the score beside the best."""

    def __init__(self, objective: str, total: Optional[int], prefix: str = "", estimate: bool = True,
                 out: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic) -> None:
        #: ``total``: the search's number of trials (None for Hyperband, which sets it as it goes);
        #: ``estimate``: whether the time left can be told (not by one of several workers).
        self.objective = objective
        self.total = total
        self.prefix = prefix
        self.estimate = estimate
        self._out = out
        self._clock = clock
        self._first: Optional[float] = None
        self._started: Dict[str, float] = {}
        self._durations: List[float] = []

    def _print(self, line: str) -> None:
        print(f"{self.prefix}{line}", file=self._out or sys.stdout, flush=True)

    def _head(self, trial_id: str, values: Mapping[str, Any]) -> str:
        searched = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        names = short_names(list(searched))
        parts = [f"trial {number(trial_id)}" + (f"/{self.total}" if self.total else "")]
        parts += [f"{names[k]}={_value(v)}" for k, v in searched.items()]
        if "tuner/epochs" in values:  # Hyperband: this trial's epochs, and the trial it continues
            parts.append(f"epochs={values['tuner/epochs']}")
            if values.get("tuner/trial_id"):
                parts.append(f"(continues trial {number(values['tuner/trial_id'])})")
        return " ".join(parts)

    def started(self, trial_id: str, values: Mapping[str, Any]) -> None:
        """The trial's start line: its number (of how many) and values."""
        now = self._clock()
        self._first = now if self._first is None else self._first
        self._started[str(trial_id)] = now
        self._print(f"{self._head(trial_id, values)} ...")

    def ended(self, trial_id: str, values: Mapping[str, Any], status: str, score: Optional[float],
              best: Optional[Tuple[str, Optional[float]]], reason: Optional[str] = None, note: Optional[str] = None,
              folds: Optional[Tuple[int, float]] = None) -> None:
        """The trial's end line: its score and the best so far (``best``: its trial id and score),
        or FAILED and ``reason``; ``note`` (why it stopped early); ``folds`` (how many, and the
        score's standard deviation over them: a fold-scored trial's score is their mean); its time,
        and the time left."""
        now = self._clock()
        took = now - self._started.pop(str(trial_id), now)
        self._durations.append(took)
        if status == "COMPLETED" and score is not None:
            outcome = f"{self.objective}={score:.4f}"
            if folds is not None:
                outcome += f" (mean of {folds[0]} folds, sd {folds[1]:.4f})"
            if best is not None and best[1] is not None:
                outcome += f" (best {best[1]:.4f}, trial {number(best[0])})"
        else:
            again = " (to be run again)" if status == "INVALID" else ""
            outcome = f"FAILED{again}: {reason or status}"
        if note:
            outcome += f", {note},"
        self._print(f"{self._head(trial_id, values)} {outcome} {duration(took)}{self._left(trial_id, now)}")

    def _left(self, trial_id: str, now: float) -> str:
        if self.total is None:
            return f", {duration(now - (self._first or now))} so far"
        left = self.total - int(number(trial_id)) if str(trial_id).isdigit() else 0
        if not self.estimate or left <= 0:
            return ""
        return f", about {duration(left * sum(self._durations) / len(self._durations))} left"
