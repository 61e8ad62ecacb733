"""`pipeline train`: one LSTM text classifier, trained, evaluated and recorded in MLflow."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from pipeline import experiment, sweep, tracking, validate
from pipeline.baseline import beside
from pipeline.config import to_container
from pipeline.evaluate import with_interval


def _run_name(cfg: DictConfig) -> str:
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    return f"{cfg.dataset.name}-{cfg.model.name}-s{cfg.seed}"  # what tells runs apart first; the UI shows the time


def hydra_overrides() -> List[str]:
    """The command-line overrides of this Hydra job (none when composed in code)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig) -> float:
    """Train, evaluate and record one model; returns ``training.objective`` at its best epoch (what
    a Hydra sweeper optimises: a validation metric, never a test one; NaN when it was not logged,
    as with ``training.fit_on=train_val``)."""
    run_id, _ = train_and_record(cfg)
    objective = str(cfg.training.objective)
    history = tracking.metric_history(str(cfg.tracking.uri), run_id, objective)
    if not history:
        return float("nan")
    return float(min(history) if objective.endswith("loss") else max(history))


def train_and_record(
    cfg: DictConfig,
    extra_tags: Optional[Dict[str, str]] = None,
    overrides: Optional[List[str]] = None,
    check: Optional[Callable[[experiment.Prepared], Dict[str, str]]] = None,
) -> Tuple[str, Dict[str, float]]:
    """Train, evaluate and record one model; returns its run id and test metrics.

    ``check`` (a rerun's comparison with its original) sees the prepared data before any
    run is opened; it raises to stop, or returns tags to add.
    """
    config = to_container(cfg)
    validate.check(cfg)  # every setting, before the store is opened (pipeline/validate.py)
    tracking.preflight(cfg.tracking)
    splits = validate.splits(cfg)  # a data error: one line, before TensorFlow is imported
    experiment.use_threads(cfg.training.threads)
    experiment.seed_everything(cfg.seed, cfg.training.deterministic)
    prepared = experiment.prepare(cfg, splits)
    tags = {**experiment.run_tags(cfg, config, prepared, "train"), **(extra_tags or {})}
    if check is not None:
        tags.update(check(prepared))
    parent = sweep.parent_run_id() if overrides is None else None
    if parent is not None:  # a job of a sweep: done already if its config and data FINISHED under it
        done = tracking.finished_job(cfg.tracking, parent, tags["config_hash"], tags["data_fingerprint"])
        if done is not None:
            print(f"run {done.run_id} ({cfg.dataset.name}, {cfg.model.name}): this job of sweep {parent} FINISHED before; not run again", flush=True)
            return done.run_id, {k.removeprefix("test_"): v for k, v in done.metrics.items() if k.startswith("test_")}
    from pipeline.model import build_model

    model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
    fitted = experiment.fit_baseline(cfg, prepared)
    prepared.teacher(cfg.training)  # distillation's, before the run: one that cannot be fit is a one-line error

    with tracking.tracked_run(cfg.tracking, _run_name(cfg), tags, parent_run_id=parent) as active:
        experiment.record_inputs(config, hydra_overrides() if overrides is None else overrides, prepared)
        experiment.record_baseline(fitted)
        history = experiment.fit(model, prepared, cfg.training, cfg.seed, callbacks=[tracking.epoch_logger()])
        tracking.log_metrics({"epochs_trained": len(history.history.get("loss", []))})
        metrics, _ = experiment.record_evaluation(model, prepared, cfg, history.history)
        run_id, experiment_id = active.info.run_id, active.info.experiment_id

    print(
        f"run {run_id} ({cfg.dataset.name}, {cfg.model.name}): test_accuracy={with_interval(metrics)}{beside(fitted)} "
        f"test_f1_macro={metrics['f1_macro']:.4f} | UI: {tracking.ui_hint(cfg.tracking, experiment_id, run_id)}",
        flush=True,
    )
    return run_id, metrics
