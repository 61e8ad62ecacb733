"""After the search: the configurations trained again with other seeds, and the final model.

Owns the refit (the best configuration trained again on train+validation for the epochs its
trial found best: the final model by default), seed variance (the top configurations retrained
per seed, and a warning when the best two are within seed noise) and the ensemble (the best trial's model averaged with its configuration
retrained per seed, members kept in the project so that a resumed search trains only the
missing ones). Every retraining is a child run of the search tagged ``<kind>.trial_id`` and
``<kind>.seed``. How the final model is chosen or trained goes here.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig

from pipeline import experiment, tracking
from pipeline.config import seeds_after
from pipeline.diskfull import writing
from pipeline.model import build_model
from pipeline.search_space import with_values
from pipeline.tuning.hypermodel import searched_values
from pipeline.tuning.compat import write_json
from pipeline.tuning.progress import named
from pipeline.tuning.project import Project
from pipeline.tuning.prune import best_of


def _member_weights(cfg: DictConfig, project: Project, parent_run_id: str, best: Any, kind: str, stem: str) -> Callable[[Any], Path]:
    """Where a final step (``kind``: ensemble, refit) keeps each member's weights, by seed
    (``<project>/<kind>/<stem>-seed<s>.weights.h5``), so that a resumed search trains only the
    members it lacks; a member run its process left RUNNING is closed FINISHED (weights kept) or
    KILLED."""
    folder = project.path / kind
    folder.mkdir(parents=True, exist_ok=True)

    def weights(seed: Any) -> Path:
        return folder / f"{stem}-seed{seed}.weights.h5"

    tracking.close_stale_runs(
        cfg.tracking, parent_run_id, f"{kind}.seed",
        lambda tags: tags.get(f"{kind}.trial_id") == str(best.trial_id) and weights(tags[f"{kind}.seed"]).is_file(),
    )
    return weights


def _save_whole(model: Any, path: Path) -> None:
    """A member's weights written beside ``path``, then renamed: whole or absent."""
    tmp = path.with_name(f".{os.getpid()}-{path.name}")
    try:
        with writing(str(path)):
            model.save_weights(str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


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
        history = experiment.fit(model, prepared, with_values(cfg, values).training, seed,
                                 callbacks=[tracking.epoch_logger(describe_model=False)])
        score = best_of(history.history.get(str(cfg.tuner.objective), []), str(cfg.tuner.direction))
        tracking.log_metrics({"trial_score": score})
        yield model, score


def seed_variance(tuner: Any, cfg: DictConfig, prepared: experiment.Prepared, parent_run_id: str) -> Any:
    """Train the top ``tuner.final.seed_variance.top_k`` configurations again with each seed.

    Each (configuration, seed) is a child run of the search tagged ``seed_variance.trial_id``
    and ``seed_variance.seed``. Returns one row per configuration: its search score and the
    mean and standard deviation of the objective over the seeds, best mean first.
    """
    import pandas as pd

    settings = cfg.tuner.final.seed_variance
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
        f"{named(first['trial_id'])} and {named(second['trial_id'])} differ by {gap:.4f} in mean {objective}, "
        f"within the seed noise ({noise:.4f} std): the ranking between them is not reliable"
    )


def ensemble(tuner: Any, cfg: DictConfig, prepared: experiment.Prepared, project: Project, parent_run_id: str, best: Any, best_model: Any) -> Any:
    """The best trial's model averaged with its configuration trained again with each ``tuner.final.ensemble.seeds``.

    Each new member is a child run of the search tagged ``ensemble.trial_id`` and
    ``ensemble.seed``. Its weights are kept in the project (``ensemble/``), so a resumed search
    trains only the members it had not finished, and a member run its process left RUNNING is
    closed FINISHED (weights kept) or KILLED. Returns the averaged model and one row per member
    with its validation loss and accuracy.
    """
    import keras
    import pandas as pd

    from pipeline.model import average

    weights = _member_weights(cfg, project, parent_run_id, best, "ensemble", f"trial{best.trial_id}")
    # each member's weights: the best trial's in memory, the others' from their files
    members: List[Tuple[str, int, Any]] = [(named(best.trial_id), int(cfg.seed), best_model.get_weights())]
    for seed in (int(s) for s in cfg.tuner.final.ensemble.seeds):
        path = weights(seed)
        if not path.is_file():
            with _retrained(tuner, cfg, prepared, parent_run_id, best, seed, "ensemble", f"ensemble-trial{best.trial_id}-seed{seed}") as (model, _):
                _save_whole(model, path)
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


def refit_config(cfg: DictConfig, best: Any) -> DictConfig:
    """The best trial's configuration, set to train on train+validation for the epochs that trial
    found best (its best epoch for the objective, counted from 1); early stopping has nothing to
    watch there and is off. Its targets are distilled from the linear baseline as
    ``tuner.final.distill.alpha`` says, or as the trials' were (``training.distill.alpha``) where it is null."""
    refit = with_values(cfg, searched_values(best))
    refit.training = refit_training(refit)
    refit.training.epochs = int(best.best_step) + 1
    refit.training.early_stopping.enabled = False
    return refit


def refit_training(cfg: DictConfig) -> Any:
    """The ``training`` settings every refit of a search with ``cfg`` trains with, as far as its
    data and targets go (train+validation; ``tuner.final.distill.alpha`` where set, else the
    trials' ``training.distill.alpha``): what its teacher is fit for."""
    training = cfg.training.copy()
    training.fit_on = "train_val"
    if cfg.tuner.final.distill.alpha is not None:
        training.distill.alpha = cfg.tuner.final.distill.alpha
    return training


#: How far (in training accuracy) a refit may end below the best other member before it is named
#: as one that may not have trained (and, with ``tuner.final.retrain_untrained``, trained again). In the
#: seven searches of the README's targets and seed tables (AVX-512, 2026-11-27; 21 refits) no
#: member ended more than 0.058 below the best of its peers but one, 0.198 below (0.7832 against
#: 0.9807; README "Robust, not lucky"); played on validation data (`bench/refit_retry.py`, BBC News),
#: a member named so scored below its best peer on the held-out texts in 20 of 21 cases (median 14
#: points), and none was named among the fits of configurations that trained.
UNTRAINED_MARGIN = 0.10


def untrained(members: Any, margin: Optional[float] = None) -> List[Tuple[int, str]]:
    """The refit members whose training accuracy after their last epoch (on the texts they trained
    on: nothing is held out from a refit to check it) ended more than ``margin`` (default
    :data:`UNTRAINED_MARGIN`) below the best of the other members': fits that may not have trained.
    Compared with the best, not the median, so that two such members of three are both named. Their
    positions and one note each; none with fewer than two members, or when a member's record is
    missing (trained before a resume by a version that kept none)."""
    margin = UNTRAINED_MARGIN if margin is None else margin
    accuracy = members["accuracy"].astype(float).to_numpy()
    if len(accuracy) < 2 or np.isnan(accuracy).any():
        return []
    found = []
    for k, name in enumerate(members["member"]):
        best_other = float(np.max(np.delete(accuracy, k)))
        if accuracy[k] < best_other - margin:
            found.append((k, f"refit {name} ended at training accuracy {accuracy[k]:.4f}, against {best_other:.4f} for the best other member"))
    return found


def next_seed(used: Any) -> int:
    """The seed for a member trained in another's place: the first after the largest of ``used``
    that is not among them, wrapping past the largest seed to 0 (as ``${seeds_after:...}``)."""
    return next(s for s in seeds_after(max(used), len(used) + 1) if s not in used)


def refit(cfg: DictConfig, prepared: experiment.Prepared, project: Project, parent_run_id: str, best: Any) -> Tuple[Any, Any, List[str]]:
    """The best configuration trained again on train+validation: with the search's seed, and with
    each ``tuner.final.ensemble.seeds`` (the members then averaged).

    Each member is a child run of the search tagged ``refit.trial_id``, ``refit.seed`` and
    ``refit.epochs``, with its loss and accuracy per epoch. Its weights and its last epoch's record
    are kept in the project (``refit/``), so a resumed search trains only the members it had not
    finished and decides as the first process did. A member :func:`untrained` names is, with
    ``tuner.final.retrain_untrained``, trained once more with the next seed not used yet (its run
    also tagged ``refit.replaces``), and that fit takes its place in the average. Returns the final
    model, one row per member trained (seed, epochs, last epoch's training loss and accuracy, whether
    it is averaged in, the seed that replaced it), and one sentence per member named.
    """
    import json

    import keras
    import pandas as pd

    from pipeline.model import average

    refit_cfg = refit_config(cfg, best)
    epochs = int(refit_cfg.training.epochs)
    alpha = refit_cfg.training.distill.alpha
    distilled = experiment.distilled(refit_cfg.training)
    # a resumed search with other targets for its refits trains them again
    stem = f"trial{best.trial_id}-epochs{epochs}" + (f"-distill{float(alpha):g}" if distilled else "")
    # its targets, as a rerun of it trains (pipeline/rerun.py); "null" (the label alone) as the config's params say it
    shown_alpha = "null" if alpha is None else str(alpha)
    weights = _member_weights(cfg, project, parent_run_id, best, "refit", stem)

    def member(seed: int, replaces: Optional[int] = None) -> dict:
        path, record = weights(seed), weights(seed).with_suffix(".json")
        row = {"member": f"seed {seed}", "seed": seed, "epochs": epochs, "loss": np.nan, "accuracy": np.nan,
               "averaged": True, "replaced_by": None}
        if path.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # none, or unreadable: no record (NaN)
                kept = json.loads(record.read_text(encoding="utf-8"))
                row.update(loss=float(kept["loss"]), accuracy=float(kept["accuracy"]))
            return row
        # as `pipeline train` with this config trains: seeded, built, fit (so rerun reproduces it)
        experiment.seed_everything(seed, cfg.training.deterministic)
        tags = {"refit.trial_id": str(best.trial_id), "refit.seed": str(seed), "refit.epochs": str(epochs),
                "dataset": str(cfg.dataset.name), "model": str(cfg.model.name), "refit.distill.alpha": shown_alpha}
        if replaces is not None:
            tags["refit.replaces"] = str(replaces)
        with tracking.tracked_run(cfg.tracking, f"refit-trial{best.trial_id}-seed{seed}", tags, parent_run_id=parent_run_id):
            values = searched_values(best)
            tracking.log_params({**{f"hp.{k}": str(v) for k, v in values.items()}, "seed": str(seed),
                                 "training.epochs": str(epochs), "training.fit_on": "train_val",
                                 "training.distill.alpha": shown_alpha})
            model = build_model(refit_cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(refit_cfg))
            history = experiment.fit(model, prepared, refit_cfg.training, seed,
                                     callbacks=[tracking.epoch_logger(describe_model=False)]).history
            row.update(loss=float(history["loss"][-1]), accuracy=float(history["accuracy"][-1]))
            write_json(record, {"loss": row["loss"], "accuracy": row["accuracy"]})
            _save_whole(model, path)  # last: a member whose weights are there has its record
        return row

    seeds = [int(cfg.seed), *(int(s) for s in cfg.tuner.final.ensemble.seeds)]
    rows = [member(seed) for seed in seeds]
    notes, used = [], set(seeds)
    for k, note in untrained(pd.DataFrame(rows)):
        if not cfg.tuner.final.retrain_untrained:
            notes.append(f"{note}: it may not have trained, and the final model averages it in")
            continue
        seed = next_seed(used)
        used.add(seed)
        rows[k].update(averaged=False, replaced_by=seed)
        rows.append(member(seed, replaces=rows[k]["seed"]))
        notes.append(f"{note}: it may not have trained, and seed {seed} (training accuracy {rows[-1]['accuracy']:.4f}) "
                     "was averaged in its place")

    keras.backend.clear_session()
    models = []
    with warnings.catch_warnings():
        # the file holds Adam's slots; the rebuilt model's optimizer is fresh and unused here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        for row in rows:
            if row["averaged"]:
                model = build_model(refit_cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(refit_cfg))
                model.load_weights(str(weights(row["seed"])))
                models.append(model)
    table = pd.DataFrame(rows)
    table["replaced_by"] = table["replaced_by"].astype("Int64")  # a seed, blank where none
    return (models[0] if len(models) == 1 else average(models)), table, notes
