"""`pipeline train`: one LSTM text classifier, trained, evaluated and recorded in MLflow."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from omegaconf import DictConfig

from pipeline import data, evaluate, provenance, tracking
from pipeline.config import to_container
from pipeline.errors import ConfigError
from pipeline.model import DataShape, build_model, class_probabilities, text_model

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic``, make TF ops deterministic."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _class_weight(splits: data.Splits, mode: str) -> Optional[Dict[int, float]]:
    if mode == "none":
        return None
    if mode != "balanced":
        raise ConfigError(f"training.class_weight must be none or balanced, got {mode!r}")
    from sklearn.utils.class_weight import compute_class_weight

    y = splits.label_ids(splits.train)
    weights = compute_class_weight("balanced", classes=np.arange(len(splits.classes)), y=y)
    return {i: float(w) for i, w in enumerate(weights)}


def _callbacks(training: Any) -> List[Any]:
    import keras

    callbacks: List[Any] = [tracking.EpochLogger()]
    es = training.early_stopping
    if es.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, restore_best_weights=es.restore_best_weights
            )
        )
    return callbacks


def _model_requirements() -> List[str]:
    versions = provenance.package_versions()
    return [f"{name}=={versions[name]}" for name in ("tensorflow", "keras", "mlflow")] + ["pandas", "numpy"]


def _run_name(cfg: DictConfig) -> str:
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    return f"{cfg.model.name}-{cfg.dataset.name}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _overrides() -> List[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig) -> float:
    """Train, evaluate and record one model; returns its test accuracy (the sweep objective)."""
    config = to_container(cfg)
    overrides = _overrides()
    if cfg.training.epochs < 1:
        raise ConfigError(f"training.epochs must be at least 1, got {cfg.training.epochs}")
    tracking.preflight(cfg.tracking)
    seed_everything(cfg.seed, cfg.training.deterministic)

    splits = data.load_splits(cfg.dataset, cfg.seed)
    vectorizer = data.build_vectorizer(cfg.dataset, splits.train.texts)
    vocabulary = vectorizer.get_vocabulary()
    datasets = data.make_datasets(splits, vectorizer, cfg.training.batch_size, cfg.seed)
    embedding_matrix, coverage = None, None
    if cfg.model.pretrained.path:
        from pipeline.vectors import load_embedding_matrix

        embedding_matrix, coverage = load_embedding_matrix(
            cfg.model.pretrained.path, cfg.model.pretrained.format, vocabulary, cfg.seed
        )
    model = build_model(
        cfg.model, cfg.training, DataShape(len(vocabulary), len(splits.classes)), embedding_matrix=embedding_matrix
    )
    class_weight = _class_weight(splits, cfg.training.class_weight)

    fingerprint = splits.fingerprint()
    tags = {
        "dataset": str(cfg.dataset.name),
        "model": str(cfg.model.name),
        "pipeline.command": "train",
        "config_hash": provenance.config_hash(config),
        "data_fingerprint": fingerprint["all"],
        **{f"data_fingerprint.{k}": v for k, v in fingerprint.items() if k != "all"},
        **provenance.git_state(),
        **{f"version.{k}": v for k, v in provenance.package_versions().items()},
    }
    if tags["git_commit"] != "unknown":
        tags["mlflow.source.git.commit"] = tags["git_commit"]
    stats = {
        "data.train_texts": len(splits.train),
        "data.val_texts": len(splits.val),
        "data.test_texts": len(splits.test),
        "data.num_classes": len(splits.classes),
        "data.vocabulary_size": len(vocabulary),
        "data.sequence_length": int(vectorizer.get_config()["output_sequence_length"]),
        "data.duplicates_removed": splits.duplicates_removed,
    }

    with tracking.tracked_run(cfg.tracking, _run_name(cfg), tags) as active:
        tracking.log_params({**provenance.flatten(config), **{k: str(v) for k, v in stats.items()}})
        tracking.log_dict(config, "config/resolved_config.yaml")
        tracking.log_dict({"overrides": overrides}, "config/overrides.yaml")
        tracking.log_text("\n".join(vocabulary), "data/vocabulary.txt")
        tracking.log_dict({"classes": splits.classes}, "data/label_map.json")
        if coverage is not None:
            tracking.log_metrics({"pretrained_coverage": coverage})

        history = model.fit(
            datasets["train"],
            validation_data=datasets["val"],
            epochs=cfg.training.epochs,
            callbacks=_callbacks(cfg.training),
            class_weight=class_weight,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=cfg.training.verbose,
        )
        tracking.log_metrics({"epochs_trained": len(history.history.get("loss", []))})

        test_loss = float(model.evaluate(datasets["test"], verbose=0, return_dict=True)["loss"])
        y_test = splits.label_ids(splits.test)
        probs = class_probabilities(model, data.vectorize(vectorizer, splits.test.texts))
        metrics = {"loss": test_loss, **evaluate.classification_metrics(y_test, probs)}
        tracking.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        matrix = evaluate.confusion(y_test, probs, len(splits.classes))
        tracking.log_dict({"classes": splits.classes, "matrix": matrix.tolist()}, "evaluation/confusion_matrix.json")
        tracking.log_figure(evaluate.plot_confusion_matrix(matrix, splits.classes), "plots/confusion_matrix.png")
        tracking.log_figure(evaluate.plot_learning_curves(history.history), "plots/learning_curves.png")
        tracking.log_table(
            evaluate.misclassified(splits.test.texts, y_test, probs, splits.classes, cfg.tracking.max_misclassified),
            "evaluation/misclassified.csv",
        )
        if cfg.tracking.log_model:
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / "text_classifier.keras")
                text_model(vectorizer, model).save(path)
                tracking.log_text_model(path, splits.classes, _model_requirements(), splits.test.texts[:3])

        run_id = active.info.run_id
        experiment_id = active.info.experiment_id

    print(
        f"run {run_id} ({cfg.dataset.name}, {cfg.model.name}): test_accuracy={metrics['accuracy']:.4f} "
        f"test_f1_macro={metrics['f1_macro']:.4f} | UI: {tracking.ui_hint(cfg.tracking, experiment_id, run_id)}",
        flush=True,
    )
    return metrics["accuracy"]

