"""Which tuner a search runs, checked and built: ``tuner.name`` -> a Keras Tuner over the pipeline's oracle.

Owns the checks of every tuner setting a user can get wrong (before any data is read) and
:func:`make_tuner`. A new tuner goes here: its oracle in ``compat.ORACLES`` (wrapped like the
others), its settings in its ``conf/tuner/`` file and schema.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras_tuner
from omegaconf import DictConfig

from pipeline import experiment, search_space
from pipeline.errors import ConfigError
from pipeline.tuning import compat, folds
from pipeline.tuning.hypermodel import LSTMHyperModel
from pipeline.tuning.project import Project
from pipeline.tuning.trials import TrialTracking


def validate(cfg: DictConfig) -> keras_tuner.HyperParameters:
    """Every tuner setting a user can get wrong that its schema does not refuse when the config is
    composed (the name, objective, direction and on_change are enums there), checked before any
    data is read; returns the compiled space."""
    t = cfg.tuner
    if t.name != "hyperband" and t.max_trials < 1:
        raise ConfigError(f"tuner.max_trials must be at least 1, got {t.max_trials}")
    if t.name == "hyperband" and (not t.max_epochs or t.max_epochs < 1 or not t.factor or t.factor < 2):
        raise ConfigError("hyperband needs tuner.max_epochs >= 1 and tuner.factor >= 2")
    if t.executions_per_trial < 1:
        raise ConfigError(f"tuner.executions_per_trial must be at least 1, got {t.executions_per_trial}")
    if t.workers < 0:
        raise ConfigError(f"tuner.workers must be 0 or more, got {t.workers}")
    sv = t.final.seed_variance
    if sv.top_k < 0 or (sv.top_k > 0 and len(set(sv.seeds)) < 2):
        raise ConfigError(
            f"tuner.final.seed_variance needs top_k >= 0 and, when on, at least two different seeds; got top_k={sv.top_k} seeds={list(sv.seeds)}"
        )
    folds.check(cfg)
    if str(cfg.training.fit_on) != "train":
        raise ConfigError(
            "a search scores its trials on the validation split, so training.fit_on must be train "
            "(the final model is trained on train+validation by tuner.final.refit=true)"
        )
    seeds = [int(s) for s in t.final.ensemble.seeds]
    if len(set(seeds)) != len(seeds) or int(cfg.seed) in seeds:
        raise ConfigError(
            f"tuner.final.ensemble.seeds must be different seeds, none of them the search's seed ({cfg.seed}); got {seeds}"
        )
    return search_space.compile_space(cfg.search_space)


def make_tuner(cfg: DictConfig, prepared: experiment.Prepared, project: Project, parent_run_id: Optional[str], hp: keras_tuner.HyperParameters) -> Any:
    """The configured Keras Tuner, tracking each trial under ``parent_run_id`` (None: untracked), searching exactly the YAML space."""
    t = cfg.tuner
    oracle_kwargs: Dict[str, Any] = dict(
        objective=keras_tuner.Objective(t.objective, direction=t.direction),
        hyperparameters=hp,
        tune_new_entries=False,
        allow_new_entries=False,
        seed=int(t.seed),
        max_retries_per_trial=int(t.max_retries_per_trial),
        max_consecutive_failed_trials=int(t.max_consecutive_failed_trials),
    )
    if t.name == "hyperband":
        oracle_kwargs.update(max_epochs=int(t.max_epochs), factor=int(t.factor), hyperband_iterations=int(t.hyperband_iterations))
    else:
        oracle_kwargs["max_trials"] = int(t.max_trials)
        if t.name == "bayesian" and t.num_initial_points:
            oracle_kwargs["num_initial_points"] = int(t.num_initial_points)
    base = compat.tuner_class(str(t.name))
    cls = type(f"Tracked{base.__name__}", (TrialTracking, base), {})
    tuner = cls(
        cfg=cfg,
        parent_run_id=parent_run_id,
        folds=folds.resolve(cfg, prepared),
        oracle=compat.ORACLES[str(t.name)](**oracle_kwargs),
        hypermodel=LSTMHyperModel(cfg, prepared),
        executions_per_trial=int(t.executions_per_trial),
        directory=str(project.directory),
        project_name=project.name,
        overwrite=False,  # resolve_project already removed the state when tuner.overwrite asked
    )
    if isinstance(tuner.oracle, keras_tuner.Oracle):  # the chief's (or a lone) oracle; workers ask it over gRPC
        tuner.save()  # Keras Tuner reloads a project only once its tuner file exists
    return tuner
