"""The steps a train job and a search share: prepare the data, fit, evaluate and record.

``prepare`` does everything that does not depend on hyperparameters once (read, split,
adapt the vectorizer, encode every split); ``fit`` trains one model on fresh, seeded tf.data
pipelines, so a search's trial and a train run with the same values see the same batches;
``record_evaluation`` logs the test metrics, plots, misclassified texts and the raw-text model
into the active MLflow run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig

from pipeline import data, evaluate, provenance, tracking
from pipeline.diskfull import writing
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.data import Splits
    from pipeline.model import DataShape

log = logging.getLogger(__name__)


@dataclass
class ChosenC:
    """The baseline's regularisation ``C`` chosen on a job's splits (None until known): set by the
    baseline's fit or a distilled fit's teacher, whichever comes first, and read by every later
    teacher, a fold's included (its copy of :class:`Prepared` holds the same object)."""

    value: Optional[float] = None


@dataclass
class Prepared:
    """Everything about the data a model needs, computed once per job."""

    splits: data.Splits
    vectorizer: Any
    vocabulary: List[str]
    #: split name -> (token ids, label ids)
    encoded: Dict[str, tuple]
    shape: DataShape
    embedding_matrix: Optional[np.ndarray]
    pretrained_coverage: Optional[float]
    #: The linear baseline's settings (``baseline``): the features and ``C`` grid of a distilled
    #: fit's teacher (``training.distill``).
    linear: Any = None
    #: A fold's data (``pipeline/tuning/folds.py``): the rows of train+validation it trains on.
    fold_rows: Optional[np.ndarray] = None
    #: The baseline's ``C`` chosen on these splits, once known: one object, shared by a fold's copy.
    linear_c: ChosenC = field(default_factory=ChosenC)

    def initial_embedding(self, cfg: DictConfig) -> Optional[np.ndarray]:
        """The vectors the embedding of a model built from ``cfg`` starts from: the file's
        (``model.pretrained.path``), LSA vectors of the texts it trains on (``model.embedding_init=lsa``:
        the training split, or the training and validation splits with ``training.fit_on=train_val``;
        a fold's training rows when this is a fold's data), or none (Keras's random initialiser).
        Never the test split, whose texts no model trains on."""
        if self.embedding_matrix is not None:
            return self.embedding_matrix
        if str(cfg.model.embedding_init) != "lsa":
            return None
        from pipeline.vectors import lsa_vectors

        return lsa_vectors(self.fit_split(cfg.training)[0], self.shape.vocab_size, int(cfg.model.embedding_dim))

    def fit_split(self, training: Any) -> tuple:
        """(token ids, label ids) a model with these ``training`` settings trains on: the training
        split, or the training and validation splits together with ``fit_on=train_val``."""
        if str(training.fit_on) == "train_val":
            return tuple(np.concatenate(parts) for parts in zip(self.encoded["train"], self.encoded["val"]))
        return self.encoded["train"]

    def fit_texts(self, training: Any) -> List[str]:
        """The texts of :meth:`fit_split`'s rows, in its order."""
        if self.fold_rows is None and str(training.fit_on) != "train_val":
            return list(self.splits.train.texts)
        labelled = [*self.splits.train.texts, *self.splits.val.texts]
        return labelled if self.fold_rows is None else [labelled[i] for i in self.fold_rows]

    def teacher(self, training: Any, off: Optional[str] = None) -> Optional[np.ndarray]:
        """The teacher's probabilities for :meth:`fit_split`'s rows (``training.distill``:
        ``pipeline/distill.py``), fit on those rows alone; None without distillation. One that
        cannot be fit is a one-line error naming ``off`` (default ``training.distill.alpha=null``)."""
        if not distilled(training):
            return None
        from pipeline import distill

        off = off or distill.OFF
        if self.linear_c.value is None:
            from pipeline import baseline

            self.linear_c.value = baseline.chosen_c(self.splits, self.linear, distill.WHAT, off)
        labels = self.fit_split(training)[1]
        return distill.teacher(self.fit_texts(training), labels, self.shape.num_classes, self.linear,
                               int(training.distill.folds), self.linear_c.value, off)

    def stats(self) -> Dict[str, str]:
        """Split sizes and vocabulary facts, logged as ``data.*`` params."""
        return {
            "data.train_texts": str(len(self.splits.train)),
            "data.val_texts": str(len(self.splits.val)),
            "data.test_texts": str(len(self.splits.test)),
            "data.num_classes": str(len(self.splits.classes)),
            "data.vocabulary_size": str(len(self.vocabulary)),
            "data.sequence_length": str(self.encoded["train"][0].shape[1]),
            "data.duplicates_removed": str(self.splits.duplicates_removed),
        }


def use_threads(threads: Optional[int]) -> None:
    """TensorFlow's intra- and inter-op thread pools at ``threads`` (``training.threads``; None:
    TensorFlow's default, every core). Called before TensorFlow runs anything in the process: once
    it has, its pools are fixed, and a different number is refused with a warning."""
    if threads is None:
        return
    import tensorflow as tf

    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() == threads == threading.get_inter_op_parallelism_threads():
        return
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # a second command in one process (tests, a notebook)
        log.warning("training.threads=%d not applied: TensorFlow is already running in this process", threads)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic``, make TF ops deterministic."""
    import keras
    import tensorflow as tf

    from pipeline import heap

    heap.freeze()  # the command's imports and data, out of every collection from here on (pipeline/heap.py)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def prepare(cfg: DictConfig, splits: Optional[Splits] = None) -> Prepared:
    """Read, dedupe and split the dataset (unless given ``splits``, read already); adapt the
    vectorizer on train; encode every split."""
    from pipeline.model import DataShape  # TensorFlow: imported once the data is known to be usable

    splits = data.load_splits(cfg.dataset, cfg.seed) if splits is None else splits
    vectorizer = data.build_vectorizer(cfg.dataset, splits.train.texts)
    vocabulary = vectorizer.get_vocabulary()
    encoded = {name: (data.vectorize(vectorizer, s.texts), splits.label_ids(s)) for name, s in splits.items()}
    matrix, coverage = None, None
    if cfg.model.pretrained.path:
        from pipeline.vectors import load_embedding_matrix

        matrix, coverage = load_embedding_matrix(cfg.model.pretrained.path, cfg.model.pretrained.format, vocabulary, cfg.seed)
    return Prepared(
        splits, vectorizer, vocabulary, encoded, DataShape(len(vocabulary), len(splits.classes)), matrix, coverage, cfg.baseline
    )


def distilled(training: Any) -> bool:
    """Whether a fit with these ``training`` settings learns from the teacher (``training.distill.alpha``
    set, below 1)."""
    distill = training.get("distill")
    return distill is not None and distill.alpha is not None and float(distill.alpha) < 1.0


def run_tags(cfg: DictConfig, config: Dict[str, Any], prepared: Prepared, command: str) -> Dict[str, str]:
    """What identifies a run: dataset, model, data and config fingerprints, code and package versions."""
    fingerprint = prepared.splits.fingerprint()
    tags = {
        "dataset": str(cfg.dataset.name),
        "model": str(cfg.model.name),
        "pipeline.command": command,
        **tracking.process_tag(),  # a run its process leaves open when it dies is closed by the next one
        "config_hash": provenance.config_hash(config),
        "data_fingerprint": fingerprint["all"],
        **{f"data_fingerprint.{k}": v for k, v in fingerprint.items() if k != "all"},
        **provenance.git_state(),
        "code_digest": provenance.code_digest(),
        **{f"version.{k}": v for k, v in provenance.package_versions().items()},
    }
    if tags["git_commit"] != "unknown":
        tags["mlflow.source.git.commit"] = tags["git_commit"]
    return tags


#: The data fingerprint's first characters, as an MLflow dataset digest (the whole one is in the tags).
DIGEST_CHARS = 16


def record_inputs(config: Dict[str, Any], overrides: List[str], prepared: Prepared, command: str = "train") -> None:
    """Params, resolved config, overrides, the splits as dataset inputs, the command line as the
    run's description, vocabulary and label map into the active run."""
    tracking.log_params({**provenance.flatten(config), **prepared.stats()})
    tracking.set_tags({"mlflow.note.content": " ".join(["pipeline", command, *overrides])})
    fingerprint = prepared.splits.fingerprint()
    tracking.log_datasets(
        str(config["dataset"]["name"]), config["dataset"].get("path"),
        {name: (split.texts, split.labels, fingerprint[name][:DIGEST_CHARS]) for name, split in prepared.splits.items()},
    )
    tracking.log_dict(config, "config/resolved_config.yaml")
    tracking.log_dict({"overrides": overrides}, "config/overrides.yaml")
    # data, as the model holds it: not scrubbed (a token equal to a secret is the model's token)
    tracking.log_data("\n".join(prepared.vocabulary), "data/vocabulary.txt")
    tracking.log_data({"classes": prepared.splits.classes}, "data/label_map.json")
    if prepared.pretrained_coverage is not None:
        tracking.log_metrics({"pretrained_coverage": prepared.pretrained_coverage})


def fit_baseline(cfg: DictConfig, prepared: Prepared) -> Optional[Any]:
    """The linear baseline on the prepared splits (``baseline.enabled``), fit before any run is opened."""
    if not cfg.baseline.enabled:
        return None
    from pipeline import baseline

    fitted = baseline.fit(prepared.splits, cfg.baseline)
    prepared.linear_c.value = fitted.C  # the C a distilled fit's teacher takes (chosen on the same splits)
    return fitted


def record_baseline(fitted: Optional[Any]) -> None:
    """The baseline's metrics (``baseline.*``) and fitted model (``baseline/model.skops``) into the active run."""
    if fitted is None:
        return
    from pipeline import baseline

    tracking.log_metrics(fitted.metrics())
    tracking.log_skops(baseline.stored(fitted.model), "baseline/model.skops")


def _batch_size(value: Any) -> int:
    batch = int(value)
    if batch < 1:
        raise ConfigError(f"training.batch_size must be at least 1, got {batch}")
    return batch


def class_weight(prepared: Prepared, mode: str, y: Optional[np.ndarray] = None) -> Optional[Dict[int, float]]:
    """``balanced``: weights inverse to class frequency in the labels trained on (``y``; default
    the training split's)."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    y = prepared.encoded["train"][1] if y is None else y
    weights = compute_class_weight("balanced", classes=np.arange(prepared.shape.num_classes), y=y)
    return {i: float(w) for i, w in enumerate(weights)}


def cosine_schedule(learning_rate: float, epochs: int) -> Any:
    """Keras's ``CosineDecay`` read per epoch by its ``LearningRateScheduler``: epoch e of ``epochs``
    trains at lr x (1 + cos(pi e / epochs)) / 2.

    The horizon is ``training.epochs`` whatever stops the run earlier (early stopping, a Hyperband
    round), so a trial and its rerun follow the same rates; a refit, whose ``epochs`` is its trial's
    best epoch, decays over its own epochs and ends at a low rate instead of mid-step.
    """
    import keras

    decay = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs)
    return keras.callbacks.LearningRateScheduler(lambda epoch: float(decay(epoch)))


def fit(
    model: Any,
    prepared: Prepared,
    training: Any,
    seed: int,
    callbacks: Optional[List[Any]] = None,
    epochs: Optional[int] = None,
    initial_epoch: int = 0,
) -> Any:
    """Train with early stopping on validation; returns the Keras History.

    ``epochs`` and ``initial_epoch`` override the config (Hyperband's rounds set them). With
    ``training.fit_on=train_val`` the model trains on the training and validation splits
    together for exactly that many epochs: nothing is held out to validate or stop on, and the
    test split is never among the texts trained on.
    """
    import keras

    batch = _batch_size(training.batch_size)
    all_callbacks = list(callbacks or [])
    if str(training.lr_schedule) == "cosine":
        # first, so that the rate it writes into each epoch's logs is there when the run records them
        all_callbacks.insert(0, cosine_schedule(float(training.learning_rate), int(training.epochs)))
    ids, labels = prepared.fit_split(training)
    weights = class_weight(prepared, training.class_weight, labels)
    encoded = {"train": (ids, labels)}
    if str(training.fit_on) != "train_val":
        encoded["val"] = prepared.encoded["val"]
    teacher = prepared.teacher(training)
    if teacher is not None:  # targets packed with the label and weight; the distilled loss reads them
        from pipeline import distill

        classes = prepared.shape.num_classes
        per_row = None if weights is None else np.array([weights[k] for k in range(classes)])[labels]
        encoded = {name: (x, distill.targets(y, teacher if name == "train" else None, float(training.distill.alpha), classes,
                                             per_row if name == "train" else None))
                   for name, (x, y) in encoded.items()}
        weights = None
        model.compile(optimizer=model.optimizer, loss=distill.loss(classes == 2), metrics=[distill.accuracy(classes == 2)])
    datasets = data.make_datasets(encoded, batch, seed, bool(training.bucket_by_length))
    validation = datasets.get("val")
    if validation is not None:
        es = training.early_stopping
        if es.enabled:
            # before the caller's callbacks, after the schedule: one that stops training itself (a
            # search's median rule) sees whether early stopping ends the fit at this epoch anyway
            all_callbacks.insert(
                1 if str(training.lr_schedule) == "cosine" else 0,
                keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, restore_best_weights=es.restore_best_weights,
                                              # said, not inferred: a distilled fit's accuracy is its own metric
                                              mode="min" if str(es.monitor).endswith("loss") else "max"),
            )
    built_before_tracing(model, encoded["train"][1])
    try:
        history = model.fit(
            datasets["train"],
            validation_data=validation,
            epochs=int(epochs or training.epochs),
            initial_epoch=int(initial_epoch),
            callbacks=all_callbacks,
            class_weight=weights,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=training.verbose,
        )
    finally:
        if teacher is not None:  # evaluated, averaged and saved as any model
            from pipeline.model import compile_standard

            compile_standard(model, model.optimizer)
    tracking.raise_stopped(all_callbacks)  # a full store stopped training: not a model trained to the end
    return history


def built_before_tracing(model: Any, targets: np.ndarray) -> None:
    """The optimizer's and the compiled metrics' variables made before ``model.fit`` traces its
    training step. Without a distribution strategy Keras (3.15, TensorFlow) makes them while it
    traces the step, and TensorFlow then traces it a second time, without variable creation: about
    a second of every fit on a 2-core machine, most of a trial on a small dataset. Public API only:
    ``Optimizer.build``, then ``Model.compute_metrics`` on one one-token text ([UNK], id 1) with the
    first row's targets, then ``reset_metrics`` (which ``fit`` does at every epoch anyway). No weight
    changes and no random state is drawn: the fit computes what it computed before, to the bit."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    one = np.ones((1, 1), dtype="int32")  # the token ids' dtype (pipeline/model.py)
    model.compute_metrics(one, targets[:1], model(one, training=False), sample_weight=None)
    model.reset_metrics()


def _model_requirements() -> List[str]:
    versions = provenance.package_versions()
    return [f"{name}=={versions[name]}" for name in ("tensorflow", "keras", "mlflow")] + ["pandas", "numpy"]


def described_version(cfg: DictConfig, prepared: Prepared, metrics: Dict[str, float], tags: Dict[str, str]) -> Dict[str, str]:
    """A registered version's tags: ``tags`` and where it came from and how it scored (``metrics``
    as :func:`record_evaluation` returns them)."""
    return {**tags, "data_fingerprint": prepared.splits.fingerprint()["all"], "dataset": str(cfg.dataset.name),
            **{f"test_{k}": f"{v:.6g}" for k, v in metrics.items()}}


def record_evaluation(
    model: Any,
    prepared: Prepared,
    cfg: DictConfig,
    history: Optional[Dict[str, List[float]]] = None,
    registered_model_name: Optional[str] = None,
    version_tags: Optional[Dict[str, str]] = None,
) -> Tuple[Dict[str, float], Optional[str]]:
    """Evaluate on the test split and log metrics, plots, mistakes and the raw-text model; returns
    the test metrics and the logged model's URI (``models:/<model_id>``; None with
    ``tracking.log_model=false``)."""
    x_test, y_test = prepared.encoded["test"]
    classes = prepared.splits.classes
    test_loss = float(model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["loss"])
    from pipeline.model import class_probabilities, text_model

    probs = class_probabilities(model, x_test)
    metrics = {"loss": test_loss, **evaluate.classification_metrics(y_test, probs)}
    tracking.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    matrix = evaluate.confusion(y_test, probs, len(classes))
    tracking.log_data({"classes": classes, "matrix": matrix.tolist()}, "evaluation/confusion_matrix.json")
    tracking.log_figure(evaluate.plot_confusion_matrix(matrix, classes), "plots/confusion_matrix.png")
    if history:
        tracking.log_figure(evaluate.plot_learning_curves(history), "plots/learning_curves.png")
    tracking.log_data(
        evaluate.misclassified(prepared.splits.test.texts, y_test, probs, classes, cfg.tracking.max_misclassified),
        "evaluation/misclassified.csv",
    )
    if registered_model_name:
        version_tags = described_version(cfg, prepared, metrics, version_tags or {})
    model_uri = None
    if cfg.tracking.log_model:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "text_classifier.keras")
            # the classifier keeps its name (model.name) inside the saved model, unless a secret is in it
            # (a TensorFlow scope name cannot hold the mark `***`)
            name = model.name if tracking.scrub(model.name) == model.name else "classifier_model"
            with writing(f"the model, staged at {path}"):
                text_model(prepared.vectorizer, model, name=name).save(path)
            model_uri = tracking.log_text_model(
                path, classes, _model_requirements(), prepared.splits.test.texts[:3], registered_model_name, version_tags
            )
    return metrics, model_uri
