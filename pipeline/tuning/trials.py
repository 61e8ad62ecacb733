"""Trial hooks: every trial an MLflow child run of the search, and the search's ranking.

Owns :class:`TrialTracking`, mixed into the tuner (Keras Tuner's ``run_trial`` and
``on_trial_begin/end`` hooks): a fresh session and the search's seed per trial, a child run with
the trial's values as ``hp.*`` params, its per-epoch metrics and ``trial_score``; a line as each
trial starts and ends (``pipeline.tuning.progress``), a failed one with its error; a tracking
server lost mid-trial waited for (the trial run again) or stopping the search (exit 75,
resumable); a full disk mid-trial stopping the search (exit 74, resumable: the trial is not
failed, it runs again). Also the table of trials, best first, and what each trial's status is for the resume
reconciliation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import keras_tuner
import numpy as np
from omegaconf import DictConfig

from pipeline import tracking
from pipeline.diskfull import full_disk
from pipeline.errors import DiskFull, TrackingLost, first_line
from pipeline.tuning import prune
from pipeline.tuning.hypermodel import searched_values
from pipeline.tuning.progress import Progress, named

#: How often a trial is run again after its tracking server died while answering and came back.
LOST_SERVER_TRIAL_RERUNS = 2


class SearchStopped(keras_tuner.errors.FatalError, TrackingLost):
    """Raised through Keras Tuner, which passes FatalError on instead of failing the trial."""


class OutOfSpace(keras_tuner.errors.FatalError, DiskFull):
    """A full disk mid-trial, raised through Keras Tuner as :class:`SearchStopped` is: the trial
    is not failed (it runs again when the same command resumes the search), the search stops."""

    @classmethod
    def stopping(cls, full: DiskFull) -> "OutOfSpace":
        out = cls(full.what, full.why, full.remedy)
        out.unclosed = full.unclosed
        return out


def memory_mb() -> Dict[str, float]:
    """This process's resident memory now and at its peak, in MiB (Linux; peak elsewhere)."""
    import resource

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"memory_peak_mb": peak_kb / 1024.0}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            rss = next(line for line in f if line.startswith("VmRSS:"))
        out["memory_rss_mb"] = int(rss.split()[1]) / 1024.0
    except (OSError, StopIteration, ValueError):
        pass
    return out


class TrialTracking:
    """Mixed into a Keras Tuner class: each trial runs inside an MLflow child run."""

    def __init__(self, *args: Any, cfg: DictConfig, parent_run_id: Optional[str], folds: int = 1, **kwargs: Any) -> None:
        self._cfg = cfg
        self._parent_run_id = parent_run_id
        self._folds = int(folds)
        super().__init__(*args, **kwargs)
        # One of several workers (Keras Tuner's distributed mode) says which, and cannot tell the
        # time left (the others run trials meanwhile).
        worker = "KERASTUNER_ORACLE_IP" in os.environ
        self._progress = Progress(str(cfg.tuner.objective), self.oracle.max_trials,  # type: ignore[attr-defined]
                                  prefix=f"{self.tuner_id}: " if worker else "", estimate=not worker)  # type: ignore[attr-defined]
        self._failures: Dict[str, str] = {}
        self._pruned: Dict[str, str] = {}  # trial id -> why tuner.prune stopped it
        self._spreads: Dict[str, float] = {}  # trial id -> the standard deviation of its score over folds

    def on_trial_begin(self, trial: Any) -> None:
        super().on_trial_begin(trial)  # type: ignore[misc]
        self._progress.started(str(trial.trial_id), trial.hyperparameters.values)

    def on_trial_end(self, trial: Any) -> None:
        """Keras Tuner's end of the trial (it scores the trial), then the trial's line."""
        trial_id = str(trial.trial_id)
        values = dict(trial.hyperparameters.values)
        reason = self._failures.pop(trial_id, None) or ((trial.message or "").strip().splitlines() or [None])[-1]
        try:
            super().on_trial_end(trial)  # type: ignore[misc]
        except BaseException:  # a failure too many in a row stops the search: its line, then the error
            if str(trial.status) != "COMPLETED":
                self._progress.ended(trial_id, values, str(trial.status), None, None, reason)
            raise
        ended = self.oracle.get_trial(trial_id)  # type: ignore[attr-defined]
        best = self.oracle.get_best_trials(1)  # type: ignore[attr-defined]
        spread = self._spreads.pop(trial_id, None)
        self._progress.ended(trial_id, values, str(ended.status), ended.score,
                             (str(best[0].trial_id), best[0].score) if best else None, reason, note=self._pruned.pop(trial_id, None),
                             folds=(self._folds, spread) if spread is not None else None)

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(LOST_SERVER_TRIAL_RERUNS + 1):
            try:
                return self._tracked_trial(trial, *args, **kwargs)
            except Exception as e:
                full = full_disk(e, default=f"the state of {named(trial.trial_id)} in {self.project_dir}")  # type: ignore[attr-defined]
                if full is not None:
                    raise OutOfSpace.stopping(full) from e
                if not tracking.is_lost(e):
                    raise self._failed(trial, e)
                # Not a failed trial. A server that died while answering is waited for, and
                # the trial run again; one that MLflow's retries could not reach stops the
                # search (exit 75), and the trial runs again when the same command resumes it.
                if attempt < LOST_SERVER_TRIAL_RERUNS and not tracking.retries_spent(e) and tracking.wait_for_server(self._cfg.tracking):
                    why = "the tracking server went away mid-trial; the trial was run again"
                    tracking.close_trial_runs(self._cfg.tracking, str(self._parent_run_id), str(trial.trial_id), why)
                    print(f"warning: {named(trial.trial_id)}: {why}", file=sys.stderr, flush=True)
                    continue
                raise SearchStopped(str(tracking.lost(e, str(self._cfg.tracking.uri)))) from None
        raise AssertionError("unreachable")

    def _failed(self, trial: Any, e: Exception) -> Exception:
        # Keras Tuner records the failure in the trial (a traceback) and goes on, silently: the
        # trial's end line says it, in one line.
        self._failures[str(trial.trial_id)] = f"{type(e).__name__}: {first_line(e)}"
        return e

    def _tracked_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        import keras

        # Free the last trial's graphs (memory stays flat), and give every trial the same
        # seed: a trial is then reproducible on its own, as a train run with its values.
        keras.backend.clear_session()
        keras.utils.set_random_seed(int(self._cfg.seed))
        if self._parent_run_id is None:  # untracked: what bench/search_cost.py compares tracking with
            return self._fit_trial(trial, *args, **kwargs)
        values = dict(trial.hyperparameters.values)
        tags = {
            "tuner.project": str(self.project_name),  # type: ignore[attr-defined]
            "tuner.trial_id": str(trial.trial_id),
            "tuner.tuner_id": str(self.tuner_id),  # type: ignore[attr-defined]
            "tuner.name": str(self._cfg.tuner.name),
            "dataset": str(self._cfg.dataset.name),
            "model": str(self._cfg.model.name),
            # the threads it trained on: a worker's share of the cores with tuner.workers
            "training.threads": str(self._cfg.training.threads or "null"),
            # scored on folds: said from the start (its cv_folds metric comes when it ends), so a rerun of one cut off knows
            **({"tuner.cv_folds": str(self._folds)} if self._folds > 1 else {}),
        }
        with tracking.tracked_run(self._cfg.tracking, f"trial-{trial.trial_id}", tags, parent_run_id=self._parent_run_id):
            tracking.log_params({f"hp.{k}": str(v) for k, v in values.items()})
            if self._folds > 1:
                histories = self._fit_trial(trial, *args, **kwargs)
                tracking.log_metric_history(histories[0].history)  # the mean over folds, as any trial's curve
            else:
                callbacks = [*kwargs.pop("callbacks", []), tracking.epoch_logger(describe_model=False)]
                histories = self._fit_trial(trial, *args, callbacks=callbacks, **kwargs)
            scores = [prune.best_of(h.history.get(self._cfg.tuner.objective, []), self._cfg.tuner.direction) for h in histories]
            tracking.log_metrics({"trial_score": float(np.mean(scores)), **memory_mb(),
                                  **({"trial_score_std": self._spreads[str(trial.trial_id)], "cv_folds": float(self._folds)} if self._folds > 1 else {})})
            return histories

    def _fit_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        """Keras Tuner's own fit of the trial; with folds, the trial's mean curve over them instead
        (``pipeline.tuning.folds``), returned as the History Keras Tuner ranks by."""
        if self._folds <= 1:
            return self._pruned_trial(trial, *args, **kwargs)
        import keras

        from pipeline.tuning import folds

        # Hyperband's round budget; with folds a round trains from scratch (there is no single checkpoint)
        epochs = int(trial.hyperparameters.values.get("tuner/epochs") or self._cfg.training.epochs)
        hypermodel = self.hypermodel  # type: ignore[attr-defined]
        curve, spread = folds.cross_validate(
            hypermodel, trial, self._cfg, hypermodel.prepared, Path(self.project_dir) / "folds",  # type: ignore[attr-defined]
            self._folds, epochs, log=self._parent_run_id is not None,
        )
        self._spreads[str(trial.trial_id)] = float(spread)  # logged with the trial, and printed in its line
        history = keras.callbacks.History()
        history.history = curve
        return [history]

    def _pruned_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        """Keras Tuner's own fit of the trial, under ``tuner.prune``'s rule (pipeline.tuning.prune);
        its objective curve kept in the project whatever the rule, for the trials after it."""
        p, trial_id = self._cfg.tuner.prune, str(trial.trial_id)
        objective, direction = str(self._cfg.tuner.objective), str(self._cfg.tuner.direction)
        project = Path(self.project_dir)  # type: ignore[attr-defined]
        stops: List[prune.Stop] = []
        if str(p.rule) != "none":
            stopper, stops = prune.callback(project, trial_id, objective, direction, int(p.min_trials), int(p.min_epochs))
            kwargs["callbacks"] = [*kwargs.pop("callbacks", []), stopper]
        histories = super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]
        curves = [h.history.get(objective, []) for h in histories]
        curve = [float(np.mean([c[i] for c in curves])) for i in range(min(len(c) for c in curves))]
        stop = stops[0] if stops else None
        prune.record(project, trial_id, curve, stop)
        if stop is not None:
            self._pruned[trial_id] = stop.describe(objective)
            if self._parent_run_id is not None:
                tracking.set_tags({"tuner.pruned": self._pruned[trial_id]})
        return histories


def trial_statuses(tuner: Any) -> Dict[str, str]:
    """Each trial's status as the oracle has it: what the MLflow child runs must agree with."""
    return {str(t.trial_id): str(t.status) for t in tuner.oracle.trials.values()}


def trial_table(tuner: Any) -> Any:
    """Every trial with its status, score and values, best first: the search's ranking, the oracle's
    (completed trials by score, equal scores as ``tuner.ties`` ranks them, then the rest), so rank 1
    is the best trial."""
    import pandas as pd

    rows = []
    stopped = prune.stopped_epochs(Path(tuner.project_dir))
    for trial in tuner.oracle.get_best_trials(len(tuner.oracle.trials)):
        values = searched_values(trial)
        rows.append({"trial_id": trial.trial_id, "status": str(trial.status), "score": trial.score, "best_step": trial.best_step,
                     # the epoch after which tuner.prune stopped it (a column only where the rule stopped one)
                     **({"stopped_after_epoch": stopped.get(str(trial.trial_id))} if stopped else {}), **values})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)
