"""Which tuner a search runs, checked and built: ``tuner.name`` -> a Keras Tuner over the pipeline's oracle.

Owns :func:`make_tuner`; the checks of every tuner setting are in pipeline/limits.py. A new
tuner goes here: its oracle in ``compat.ORACLES`` (wrapped like the others), its settings in its
``conf/tuner/`` file and schema, and its budget's checks in pipeline/limits.py.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras_tuner
from omegaconf import DictConfig

from pipeline import experiment
from pipeline.tuning import compat, folds
from pipeline.tuning.hypermodel import LSTMHyperModel
from pipeline.tuning.project import Project
from pipeline.tuning.trials import TrialTracking


def validate(cfg: DictConfig) -> keras_tuner.HyperParameters:
    """The search's config checked (pipeline.validate: every setting, and a model built at each end
    of the space) before any data is read; returns the compiled space."""
    from pipeline.validate import check

    return check(cfg)


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
    oracle = compat.ORACLES[str(t.name)](**oracle_kwargs)
    hypermodel = LSTMHyperModel(cfg, prepared)
    if t.ties == "fewer_weights":  # equal scores: the model with fewer weights ranks first
        oracle.weights_of = hypermodel.weights
    tuner = cls(
        cfg=cfg,
        parent_run_id=parent_run_id,
        folds=folds.resolve(cfg, prepared),
        oracle=oracle,
        hypermodel=hypermodel,
        executions_per_trial=int(t.executions_per_trial),
        directory=str(project.directory),
        project_name=project.name,
        overwrite=False,  # resolve_project already removed the state when tuner.overwrite asked
    )
    if isinstance(tuner.oracle, keras_tuner.Oracle):  # the chief's (or a lone) oracle; workers ask it over gRPC
        tuner.save()  # Keras Tuner reloads a project only once its tuner file exists
    return tuner
