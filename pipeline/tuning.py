"""Keras Tuner construction, and the trial hooks that make every trial an MLflow child run.

A search's state lives in ``<tuner.directory>/<tuner.project_name>``: Keras Tuner's oracle and
trials, plus ``pipeline_search.json`` (this module's), which records what the search was
started with (search space, objective, data, ...) and its MLflow parent run. Running the same
command again continues the search; running it with a different search space, objective or
data is refused (``tuner.on_change=error``) or moved to a new project (``new_project``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import keras_tuner
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import experiment, provenance, search_space, tracking
from pipeline.errors import ConfigError, TrackingLost
from pipeline.model import build_model

STATE_FILE = "pipeline_search.json"
#: What a trial's model logs every epoch, and so what an objective may be.
LOGGED_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
TUNERS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


def validate(cfg: DictConfig) -> keras_tuner.HyperParameters:
    """Every tuner setting a user can get wrong, checked before any data is read."""
    t = cfg.tuner
    if t.name not in TUNERS:
        raise ConfigError(f"unknown tuner.name {t.name!r}; choose one of {', '.join(TUNERS)}")
    if t.objective not in LOGGED_METRICS:
        raise ConfigError(f"tuner.objective {t.objective!r} is not a logged metric; choose one of {', '.join(LOGGED_METRICS)}")
    if t.direction not in ("max", "min"):
        raise ConfigError(f"tuner.direction must be max or min, got {t.direction!r}")
    if t.name != "hyperband" and t.max_trials < 1:
        raise ConfigError(f"tuner.max_trials must be at least 1, got {t.max_trials}")
    if t.name == "hyperband" and (not t.max_epochs or t.max_epochs < 1 or not t.factor or t.factor < 2):
        raise ConfigError("hyperband needs tuner.max_epochs >= 1 and tuner.factor >= 2")
    if t.executions_per_trial < 1:
        raise ConfigError(f"tuner.executions_per_trial must be at least 1, got {t.executions_per_trial}")
    if t.on_change not in ("error", "new_project"):
        raise ConfigError(f"tuner.on_change must be error or new_project, got {t.on_change!r}")
    if t.workers < 0:
        raise ConfigError(f"tuner.workers must be 0 or more, got {t.workers}")
    sv = t.seed_variance
    if sv.top_k < 0 or (sv.top_k > 0 and len(set(sv.seeds)) < 2):
        raise ConfigError(
            f"tuner.seed_variance needs top_k >= 0 and, when on, at least two different seeds; got top_k={sv.top_k} seeds={list(sv.seeds)}"
        )
    seeds = [int(s) for s in t.ensemble.seeds]
    if len(set(seeds)) != len(seeds) or int(cfg.seed) in seeds:
        raise ConfigError(
            f"tuner.ensemble.seeds must be different seeds, none of them the search's seed ({cfg.seed}); got {seeds}"
        )
    return search_space.compile_space(cfg.search_space)


def _digest(value: Any) -> str:
    return provenance.config_hash(value)[:16]


def search_identity(cfg: DictConfig, data_fingerprint: str) -> Dict[str, str]:
    """What makes two searches the same search: reloading is only safe when all of it matches."""
    t = cfg.tuner
    return {
        "search space": _digest(search_space.describe(cfg.search_space)),
        "objective": _digest([t.objective, t.direction]),
        "tuner": _digest([t.name, t.executions_per_trial, t.num_initial_points, t.max_epochs, t.factor, t.hyperband_iterations]),
        "data": data_fingerprint[:16],
        "model": _digest(OmegaConf.to_container(cfg.model, resolve=True)),
        "training": _digest(OmegaConf.to_container(cfg.training, resolve=True)),
        "seed": str(cfg.seed),
    }


@dataclass
class Project:
    """Where a search's state lives and what it was started as."""

    directory: Path
    name: str
    identity: Dict[str, str]

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def state(self) -> Dict[str, Any]:
        f = self.path / STATE_FILE
        return json.loads(f.read_text()) if f.is_file() else {}

    def write_state(self, **values: Any) -> None:
        """Atomically: write beside, then rename."""
        self.path.mkdir(parents=True, exist_ok=True)
        state = {**self.state(), "identity": self.identity, **values}
        tmp = self.path / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.path / STATE_FILE)


def resolve_project(cfg: DictConfig, identity: Dict[str, str]) -> Project:
    """The project this search continues or starts; never silently one made for another search."""
    t = cfg.tuner
    directory = Path(t.directory)
    if not directory.is_absolute():
        raise ConfigError(f"tuner.directory must be an absolute path, got {t.directory!r}")
    name = str(t.project_name)
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(
            f"tuner.project_name must be one folder name inside tuner.directory, got {name!r} "
            f"(it defaults to dataset.name-model.name-seedN: check those)"
        )
    project = Project(directory, name, identity)
    if t.overwrite:
        shutil.rmtree(project.path, ignore_errors=True)
        return project
    if not project.path.exists() or not any(project.path.iterdir()):
        return project
    old = project.state().get("identity")
    changed = [k for k in identity if not old or old.get(k) != identity[k]]
    if not changed:
        return project
    if t.on_change == "new_project":
        return Project(directory, f"{t.project_name}-{_digest(identity)[:8]}", identity)
    what = ", ".join(changed) if old else "an unknown origin"
    raise ConfigError(
        f"tuner project {project.path} holds a search with a different {what}; "
        f"rerun with tuner.overwrite=true to start it again, or tuner.on_change=new_project"
    )


class LSTMHyperModel(keras_tuner.HyperModel):
    """build(hp) and fit(hp, model) over data prepared once for the whole search."""

    def __init__(self, cfg: DictConfig, prepared: experiment.Prepared) -> None:
        super().__init__(name=str(cfg.model.name))
        self.cfg = cfg
        self.prepared = prepared

    def build(self, hp: keras_tuner.HyperParameters) -> Any:
        return build_model(self.cfg.model, self.cfg.training, self.prepared.shape, hp=hp, embedding_matrix=self.prepared.embedding_matrix)

    def fit(self, hp: keras_tuner.HyperParameters, model: Any, *args: Any, **kwargs: Any) -> Any:
        batch_size = hp.get("batch_size") if "batch_size" in hp.values else None
        return experiment.fit(
            model,
            self.prepared,
            self.cfg.training,
            self.cfg.seed,
            batch_size=batch_size,
            callbacks=kwargs.get("callbacks"),
            epochs=kwargs.get("epochs"),  # Hyperband sets epochs per round
            initial_epoch=kwargs.get("initial_epoch", 0),
        )


#: How often a trial is run again after its tracking server died while answering and came back.
LOST_SERVER_TRIAL_RERUNS = 2


class _SearchStopped(keras_tuner.errors.FatalError, TrackingLost):
    """Raised through Keras Tuner, which passes FatalError on instead of failing the trial."""


class TrialTracking:
    """Mixed into a Keras Tuner class: each trial runs inside an MLflow child run."""

    def __init__(self, *args: Any, cfg: DictConfig, parent_run_id: Optional[str], **kwargs: Any) -> None:
        self._cfg = cfg
        self._parent_run_id = parent_run_id
        super().__init__(*args, **kwargs)

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(LOST_SERVER_TRIAL_RERUNS + 1):
            try:
                return self._tracked_trial(trial, *args, **kwargs)
            except Exception as e:
                if not tracking.is_lost(e):
                    raise self._failed(trial, e)
                # Not a failed trial. A server that died while answering is waited for, and
                # the trial run again; one that MLflow's retries could not reach stops the
                # search (exit 75), and the trial runs again when the same command resumes it.
                if attempt < LOST_SERVER_TRIAL_RERUNS and not tracking.retries_spent(e) and tracking.wait_for_server(self._cfg.tracking):
                    why = "the tracking server went away mid-trial; the trial was run again"
                    tracking.close_trial_runs(self._cfg.tracking, str(self._parent_run_id), str(trial.trial_id), why)
                    print(f"warning: trial {trial.trial_id}: {why}", file=sys.stderr, flush=True)
                    continue
                raise _SearchStopped(str(tracking.lost(e, str(self._cfg.tracking.uri)))) from None
        raise AssertionError("unreachable")

    def _failed(self, trial: Any, e: Exception) -> Exception:
        # Keras Tuner records the failure in the trial and goes on, silently: say it.
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"trial {trial.trial_id} failed: {type(e).__name__}: {first}", file=sys.stderr, flush=True)
        return e

    def _tracked_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        import keras

        # Free the last trial's graphs (memory stays flat), and give every trial the same
        # seed: a trial is then reproducible on its own, as a train run with its values.
        keras.backend.clear_session()
        keras.utils.set_random_seed(int(self._cfg.seed))
        if self._parent_run_id is None:  # untracked: what bench/search_cost.py compares tracking with
            return super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]
        values = dict(trial.hyperparameters.values)
        tags = {
            "tuner.project": str(self.project_name),
            "tuner.trial_id": str(trial.trial_id),
            "tuner.tuner_id": str(self.tuner_id),
            "tuner.name": str(self._cfg.tuner.name),
            "dataset": str(self._cfg.dataset.name),
            "model": str(self._cfg.model.name),
        }
        with tracking.tracked_run(self._cfg.tracking, f"trial-{trial.trial_id}", tags, parent_run_id=self._parent_run_id):
            tracking.log_params({f"hp.{k}": str(v) for k, v in values.items()})
            callbacks = [*kwargs.pop("callbacks", []), tracking.epoch_logger(describe_model=False)]
            histories = super().run_trial(trial, *args, callbacks=callbacks, **kwargs)  # type: ignore[misc]
            scores = [_best(h.history.get(self._cfg.tuner.objective, []), self._cfg.tuner.direction) for h in histories]
            tracking.log_metrics({"trial_score": float(np.mean(scores)), **memory_mb()})
            return histories


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


def _best(values: List[float], direction: str) -> float:
    if not values:
        return float("nan")
    return float(max(values) if direction == "max" else min(values))


def make_tuner(cfg: DictConfig, prepared: experiment.Prepared, project: Project, parent_run_id: Optional[str], hp: keras_tuner.HyperParameters) -> Any:
    """The configured Keras Tuner, tracking each trial under ``parent_run_id`` (None: untracked), searching exactly the YAML space."""
    t = cfg.tuner
    base = TUNERS[t.name]
    cls = type(f"Tracked{base.__name__}", (TrialTracking, base), {})
    kwargs: Dict[str, Any] = dict(
        hypermodel=LSTMHyperModel(cfg, prepared),
        objective=keras_tuner.Objective(t.objective, direction=t.direction),
        hyperparameters=hp,
        tune_new_entries=False,
        allow_new_entries=False,
        seed=int(t.seed),
        max_retries_per_trial=int(t.max_retries_per_trial),
        max_consecutive_failed_trials=int(t.max_consecutive_failed_trials),
        executions_per_trial=int(t.executions_per_trial),
        directory=str(project.directory),
        project_name=project.name,
        overwrite=False,  # resolve_project already removed the state when tuner.overwrite asked
    )
    if t.name == "hyperband":
        kwargs.update(max_epochs=int(t.max_epochs), factor=int(t.factor), hyperband_iterations=int(t.hyperband_iterations))
    else:
        kwargs["max_trials"] = int(t.max_trials)
        if t.name == "bayesian" and t.num_initial_points:
            kwargs["num_initial_points"] = int(t.num_initial_points)
    tuner = cls(cfg=cfg, parent_run_id=parent_run_id, **kwargs)
    if isinstance(tuner.oracle, keras_tuner.Oracle):  # the chief's (or a lone) oracle; workers ask it over gRPC
        if hasattr(tuner.oracle, "_seed_state"):
            tuner.oracle._random_values = types.MethodType(_random_values, tuner.oracle)
        _reconcile(tuner.oracle)
        tuner.save()  # Keras Tuner reloads a project only once its tuner file exists
    return tuner


def _atomic_save_json(path: Any, obj: Any) -> str:
    """Keras Tuner's ``utils.save_json``, written beside and renamed into place.

    Keras Tuner rewrites ``oracle.json`` and each ``trial.json`` in place; a process killed
    mid-write left a truncated file that no later run could reload.
    """
    text = json.dumps(obj)
    path = str(path)
    if "://" in path:  # a remote filesystem (gs://...): Keras Tuner's own write
        return _keras_tuner_save_json(path, obj)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return text


_keras_tuner_save_json = keras_tuner.src.utils.save_json
keras_tuner.src.utils.save_json = _atomic_save_json


def _reconcile(oracle: Any) -> None:
    """Make the oracle agree with its trials' files after a crash.

    Keras Tuner writes a trial's file, then the oracle's; a process killed between the two
    leaves a trial that is RUNNING but queued nowhere (never run again, so the search ends
    a trial short), or COMPLETED but queued to run again (counted twice). And Keras Tuner
    reloads trials in the file system's order, then ranks equal scores in the order it holds
    them: they are put back in the order they ran, so a resumed search (its registration, its
    ensemble) picks the same best trial among equals as the process that ran them.
    """
    from keras_tuner.src.engine.trial import TrialStatus

    oracle.trials = dict(sorted(oracle.trials.items(), key=lambda item: (len(item[0]), item[0])))
    queued = list(oracle._retry_queue)
    changed = False
    for trial_id, trial in oracle.trials.items():
        if trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED) and trial_id in queued:
            oracle._retry_queue = [t for t in oracle._retry_queue if t != trial_id]
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)
            changed = True
        elif trial.status == TrialStatus.RUNNING and trial_id not in queued:
            oracle._retry_queue.append(trial_id)
            changed = True
    if changed:
        oracle.save()


def trial_statuses(tuner: Any) -> Dict[str, str]:
    """Each trial's status as the oracle has it: what the MLflow child runs must agree with."""
    return {str(t.trial_id): str(t.status) for t in tuner.oracle.trials.values()}


def _mixed_seed(seed_state: int) -> int:
    return int.from_bytes(hashlib.sha256(str(seed_state).encode()).digest()[:8], "big")


def _random_values(oracle: Any) -> Optional[Dict[str, Any]]:
    """Keras Tuner's ``Oracle._random_values``, with each value's seed hashed first.

    Keras Tuner draws each value as ``random.Random(seed_state).random()``, ``seed_state`` + 1
    per value, so with four searched values a given one is drawn from seeds 4 apart, whose first
    Mersenne Twister outputs are far from independent: from seed 42 the SST-2 space's
    ``embedding_dim`` (128 or 256) came out 128 in all of the first 12 trials, and ``units`` at its
    top in most. The same state and order, hashed, sample the space evenly (tests/test_search_space.py).
    """
    collisions = 0
    while True:
        hps = keras_tuner.HyperParameters()
        for hp in oracle.hyperparameters.space:
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = hp.random_sample(_mixed_seed(oracle._seed_state))
                oracle._seed_state += 1
        if not oracle._duplicate(hps.values):
            return hps.values
        collisions += 1
        if collisions > oracle._max_collisions:
            return None


def searched_values(trial: Any) -> Dict[str, Any]:
    """A trial's values of the searched settings (without Keras Tuner's own ``tuner/*`` entries)."""
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


def trial_table(tuner: Any, direction: str) -> Any:
    """Every trial with its status, score and values, best first: the search's ranking."""
    import pandas as pd

    rows = []
    for trial in tuner.oracle.trials.values():
        values = searched_values(trial)
        rows.append({"trial_id": trial.trial_id, "status": str(trial.status), "score": trial.score, "best_step": trial.best_step, **values})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values("score", ascending=direction == "min", na_position="last", kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def wait_for_file(path: Path, timeout: float) -> bool:
    """For workers: the chief writes the search state before they may start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return True
        time.sleep(0.2)
    return False


@contextmanager
def _retrained(
    tuner: Any, cfg: DictConfig, prepared: experiment.Prepared, parent_run_id: str, trial: Any, seed: int, kind: str, run_name: str
) -> Iterator[Tuple[Any, float]]:
    """``trial``'s configuration trained again with ``seed``, in a child run of the search tagged
    ``<kind>.trial_id`` and ``<kind>.seed``; yields the model and its score inside the run."""
    import keras

    values = searched_values(trial)
    keras.backend.clear_session()
    experiment.seed_everything(seed, cfg.training.deterministic)
    tags = {f"{kind}.trial_id": str(trial.trial_id), f"{kind}.seed": str(seed),
            "dataset": str(cfg.dataset.name), "model": str(cfg.model.name)}
    with tracking.tracked_run(cfg.tracking, run_name, tags, parent_run_id=parent_run_id):
        tracking.log_params({**{f"hp.{k}": str(v) for k, v in values.items()}, "seed": str(seed)})
        model = tuner.hypermodel.build(trial.hyperparameters)
        history = experiment.fit(model, prepared, cfg.training, seed, batch_size=values.get("batch_size"),
                                 callbacks=[tracking.epoch_logger(describe_model=False)])
        score = _best(history.history.get(str(cfg.tuner.objective), []), str(cfg.tuner.direction))
        tracking.log_metrics({"trial_score": score})
        yield model, score


def seed_variance(tuner: Any, cfg: DictConfig, prepared: experiment.Prepared, parent_run_id: str) -> Any:
    """Train the top ``tuner.seed_variance.top_k`` configurations again with each seed.

    Each (configuration, seed) is a child run of the search tagged ``seed_variance.trial_id``
    and ``seed_variance.seed``. Returns one row per configuration: its search score and the
    mean and standard deviation of the objective over the seeds, best mean first.
    """
    import pandas as pd

    settings = cfg.tuner.seed_variance
    seeds = [int(s) for s in dict.fromkeys(settings.seeds)]
    # a resumed search trains them all again: one its process left RUNNING is closed KILLED
    tracking.close_stale_runs(cfg.tracking, parent_run_id, "seed_variance.seed", lambda tags: False)
    direction, objective = str(cfg.tuner.direction), str(cfg.tuner.objective)
    rows = []
    for trial in tuner.oracle.get_best_trials(int(settings.top_k)):
        values = searched_values(trial)
        scores = []
        for seed in seeds:
            with _retrained(tuner, cfg, prepared, parent_run_id, trial, seed, "seed_variance", f"trial-{trial.trial_id}-seed{seed}") as (_, score):
                scores.append(score)
        rows.append({"trial_id": trial.trial_id, "search_score": float(trial.score), f"{objective}_mean": float(np.mean(scores)),
                     f"{objective}_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                     "seeds": " ".join(map(str, seeds)), **values})
    table = pd.DataFrame(rows).sort_values(f"{objective}_mean", ascending=direction == "min", kind="stable")
    return table.reset_index(drop=True)


def ensemble(tuner: Any, cfg: DictConfig, prepared: experiment.Prepared, project: Project, parent_run_id: str, best: Any, best_model: Any) -> Any:
    """The best trial's model averaged with its configuration trained again with each ``tuner.ensemble.seeds``.

    Each new member is a child run of the search tagged ``ensemble.trial_id`` and
    ``ensemble.seed``. Its weights are kept in the project (``ensemble/``), so a resumed search
    trains only the members it had not finished, and a member run its process left RUNNING is
    closed FINISHED (weights kept) or KILLED. Returns the averaged model and one row per member
    with its validation loss and accuracy.
    """
    import keras
    import pandas as pd

    from pipeline.model import average

    folder = project.path / "ensemble"
    folder.mkdir(parents=True, exist_ok=True)

    def weights(seed: Any) -> Path:
        return folder / f"trial{best.trial_id}-seed{seed}.weights.h5"

    tracking.close_stale_runs(
        cfg.tracking, parent_run_id, "ensemble.seed",
        lambda tags: tags.get("ensemble.trial_id") == str(best.trial_id) and weights(tags["ensemble.seed"]).is_file(),
    )
    # each member's weights: the best trial's in memory, the others' from their files
    members: List[Tuple[str, int, Any]] = [(f"trial {best.trial_id}", int(cfg.seed), best_model.get_weights())]
    for seed in (int(s) for s in cfg.tuner.ensemble.seeds):
        path = weights(seed)
        if not path.is_file():
            with _retrained(tuner, cfg, prepared, parent_run_id, best, seed, "ensemble", f"ensemble-trial{best.trial_id}-seed{seed}") as (model, _):
                tmp = folder / f".{os.getpid()}-{path.name}"  # written beside, then renamed: whole or absent
                model.save_weights(str(tmp))
                tmp.replace(path)
        members.append((f"seed {seed}", seed, path))

    keras.backend.clear_session()
    models, rows = [], []
    x_val, y_val = prepared.encoded["val"]
    for name, seed, member_weights in members:
        model = tuner.hypermodel.build(best.hyperparameters)
        if isinstance(member_weights, Path):
            model.load_weights(str(member_weights))
        else:
            model.set_weights(member_weights)
        scores = model.evaluate(x_val, y_val, batch_size=256, verbose=0, return_dict=True)
        rows.append({"member": name, "seed": seed, "val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"])})
        models.append(model)
    averaged = average(models)
    scores = averaged.evaluate(x_val, y_val, batch_size=256, verbose=0, return_dict=True)
    rows.append({"member": "average", "seed": None, "val_loss": float(scores["loss"]), "val_accuracy": float(scores["accuracy"])})
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype("Int64")  # whole numbers, blank for the average
    return averaged, table


def seed_noise_warning(table: Any, objective: str) -> Optional[str]:
    """A warning when the best two configurations' means differ by less than their seed noise."""
    if len(table) < 2:
        return None
    first, second = table.iloc[0], table.iloc[1]
    gap = abs(first[f"{objective}_mean"] - second[f"{objective}_mean"])
    noise = max(first[f"{objective}_std"], second[f"{objective}_std"])
    if gap >= noise:
        return None
    return (
        f"trials {first['trial_id']} and {second['trial_id']} differ by {gap:.4f} in mean {objective}, "
        f"within the seed noise ({noise:.4f} std): the ranking between them is not reliable"
    )
