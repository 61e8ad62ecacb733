"""What each setting may be: the range of every number and the rules between settings.

Each function checks one section of a composed config and raises a one-line :class:`ConfigError`
naming the setting; :func:`pipeline.validate.check` runs them all before anything is created, and
the data and tuning code call the ones they depend on (``split_sizes``, ``sequence_settings``,
``cv_folds``, ``tuner_location``) for configs that reach them another way. A new setting's range,
or a rule between settings, goes here.
"""

from __future__ import annotations

import codecs
import math
import os
import re
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf

from pipeline.config import TUNER_SCHEMAS
from pipeline.errors import ConfigError, DataError, shown
from pipeline.readers import whole_number

#: What ``model.name`` may be: a Keras model's name is a TensorFlow scope name.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Keras, NumPy and Python seeds: 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
#: TensorFlow's shapes are 32-bit: no vocabulary, width, length or batch is larger.
MAX_DIM = 2**31 - 1


def sections(cfg: DictConfig) -> None:
    """Every section of a train config, and of a tune config's tuner."""
    try:
        dataset(cfg.dataset)
    except ConfigError as e:
        data_dir = str(cfg.paths.data_dir)
        if str(e).startswith(f"data file not found: {data_dir.rstrip('/')}/"):  # a dataset that ships no data: where it looked
            raise ConfigError(f"{e}; the data directory is paths.data_dir={data_dir} (set PIPELINE_DATA_DIR, or paths.data_dir=, "
                              "to where the datasets are)") from None
        raise
    model(cfg.model)
    training(cfg.training)
    tracking(cfg.tracking)
    baseline(cfg.baseline)
    _within("seed", cfg.seed, 0, MAX_SEED)
    if "tuner" in cfg:
        tuner(cfg)


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {shown(value)}")
    return float(value)


def _at_least(path: str, value: Any, low: int) -> None:
    if value is not None and _number(path, value) < low:
        raise ConfigError(f"{path} must be at least {low}, got {value}" if low else f"{path} must be 0 or more, got {value}")


def _within(path: str, value: Any, low: float, high: float) -> None:
    if not low <= _number(path, value) <= high:
        raise ConfigError(f"{path} must be between {low:g} and {high if isinstance(high, int) else f'{high:g}'}, got {value}")


def _seeds(path: str, values: Any) -> List[int]:
    """A list of seeds, each a whole number in range (OmegaConf lets a list of lists into a
    ``List[int]`` through an override: ``[[1]]``)."""
    seeds = list(values)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{path} must be a list of whole numbers, got {OmegaConf.to_container(values) if OmegaConf.is_config(values) else values}")
        _within(path, seed, 0, MAX_SEED)
    return seeds


def _size(path: str, value: Any, low: int = 1) -> None:
    """A count TensorFlow makes a dimension of: ``low`` .. ``MAX_DIM``."""
    _at_least(path, value, low)
    if value is not None and value > MAX_DIM:
        raise ConfigError(f"{path} must be at most {MAX_DIM} (TensorFlow's largest dimension), got {value}")


def _memory(m: Any) -> None:
    """The model's weights that do not grow with the data (the LSTM layers and the classifier,
    and the embedding at its smallest), with the optimizer's two slots each, fit this machine."""
    dirs, units, embedding = 2 if m.bidirectional else 1, int(m.units), int(m.embedding_dim)
    lstm = 4 * units * dirs * ((embedding + units + 1) + (int(m.num_layers) - 1) * (units * dirs + units + 1))
    size = 3 * 4 * (lstm + 3 * embedding + units * dirs + 1)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if size > memory:
        raise ConfigError(f"model.units={units}, model.embedding_dim={embedding} and model.num_layers={m.num_layers} need "
                          f"{size / 2**30:,.0f} GiB for their weights and the optimizer's state; this machine has {memory / 2**30:,.0f} GiB")


def _existing_file(path: Any, what: str) -> None:
    p = Path(str(path)).expanduser()
    if p.is_dir():
        raise ConfigError(f"data file is a directory: {shown(p)} ({what} names one file; one file per class: dataset.class_files)")
    if not p.is_file():
        raise ConfigError(f"data file not found: {shown(p)} ({what})")


def split_sizes(ds: Any) -> None:
    """``val_size`` and ``test_size``, as given (not rescaled), their sum where both are cut, and the seed."""
    if getattr(ds, "split_seed", None) is not None:
        _within("dataset.split_seed", ds.split_seed, 0, MAX_SEED)
    for what in ("val", "test"):
        if not 0.0 < _number(f"dataset.{what}_size", getattr(ds, f"{what}_size")) < 1.0:
            raise ConfigError(f"dataset.{what}_size must be between 0 and 1, got {getattr(ds, f'{what}_size')}")
    if float(ds.val_size) + float(ds.test_size) >= 1.0 and ds.val_path is None and ds.test_path is None:
        raise ConfigError(f"dataset.val_size + dataset.test_size must be below 1, got {ds.val_size} + {ds.test_size}")


def sequence_settings(ds: Any) -> Optional[int]:
    """``sequence_length`` (a positive integer, or ``auto`` with its percentile and cap); returns the integer."""
    spec = str(ds.sequence_length).strip().lower()
    if spec != "auto":
        length = whole_number(spec)
        if length is None or length < 1:
            raise ConfigError(f"dataset.sequence_length must be a positive integer or auto, got {shown(repr(ds.sequence_length))}")
        _size("dataset.sequence_length", length)
        return length
    percentile = _number("dataset.length_percentile", ds.length_percentile)
    if not 0 < percentile <= 100:
        raise ConfigError(f"dataset.length_percentile must be above 0 and at most 100, got {ds.length_percentile}")
    _size("dataset.max_sequence_length", ds.max_sequence_length)
    return None


def dataset(ds: Any) -> None:
    """Where the texts come from and how they are split and tokenized."""
    if str(ds.source) == "files":
        if not ds.path and not ds.class_files:
            raise ConfigError("dataset=files needs dataset.path=<file> (or dataset.class_files)")
        if str(ds.format) == "lines" and not ds.class_files:
            raise ConfigError("dataset.format=lines reads dataset.class_files ({label: path}), not dataset.path")
        for what in ("path", "val_path", "test_path"):
            if getattr(ds, what) and not (what == "path" and ds.class_files):
                _existing_file(getattr(ds, what), f"dataset.{what}")
        if ds.class_files is not None and not (OmegaConf.is_dict(ds.class_files) and all(
                isinstance(v, str) and v.strip() for v in ds.class_files.values())):
            raise ConfigError("dataset.class_files must be {label: file, ...}, e.g. dataset.class_files='{pos: a.txt, neg: b.txt}'")
        for label, path in (ds.class_files or {}).items():
            _existing_file(path, f"dataset.class_files.{label}")
    for what in ("text", "label"):
        column = str(getattr(ds, f"{what}_column"))
        if not column.strip():
            raise ConfigError(f"dataset.{what}_column is empty; give a column name or a 0-based index")
        if (whole_number(column.strip()) or 0) < 0:
            raise ConfigError(f"dataset.{what}_column {column}: a column index counts from 0, got a negative one")
    if str(ds.text_column) == str(ds.label_column):
        raise ConfigError(f"dataset.text_column and dataset.label_column are the same column ({shown(ds.text_column)})")
    if ds.delimiter is not None:
        from pipeline.readers import delimiter_of

        if len(delimiter_of(ds.delimiter)) != 1:
            raise ConfigError(f"dataset.delimiter must be one character (a tab: '\\t'), got {shown(repr(ds.delimiter))}")
        if delimiter_of(ds.delimiter) in '"\r\n':
            raise ConfigError(f"dataset.delimiter cannot be a line break or the quote character, got {shown(repr(ds.delimiter))}")
    try:
        codecs.lookup(str(ds.encoding))
    except (LookupError, ValueError):  # ValueError: a name with a NUL character in it
        raise ConfigError(f"unknown encoding {shown(repr(ds.encoding))} (dataset.encoding)") from None
    _at_least("dataset.max_samples", ds.max_samples, 1)
    split_sizes(ds)
    _size("dataset.vocab_size", ds.vocab_size, 3)
    sequence_settings(ds)


def model(m: Any) -> None:
    """The sizes and rates a model is built from (``build_model`` refuses the same), and its name."""
    if not MODEL_NAME.fullmatch(str(m.name)):
        # not echoed: a name may interpolate a secret (${oc.env:...}), and this line goes to the terminal
        raise ConfigError("model.name may hold only letters, digits, '_', '.' and '-', starting with a letter or digit "
                          "(it names the Keras model, whose scope names allow no more)")
    for what in ("embedding_dim", "units", "num_layers"):
        _size(f"model.{what}", m[what])
    for what in ("dropout", "recurrent_dropout"):
        if not 0.0 <= _number(f"model.{what}", m[what]) < 1.0:
            raise ConfigError(f"model.{what} must be in [0, 1), got {m[what]}")
    _memory(m)
    if m.pretrained.path:
        p = Path(str(m.pretrained.path)).expanduser()
        if not p.is_file():
            raise ConfigError(f"pretrained vectors file not found: {shown(p)} (model.pretrained.path)")
        dim = pretrained_dimension(m)
        if dim != int(m.embedding_dim):
            raise ConfigError(f"pretrained vectors have {dim} dimensions but model.embedding_dim={m.embedding_dim}; "
                              f"set model.embedding_dim={dim}")


def pretrained_dimension(m: Any) -> int:
    """The dimension of ``model.pretrained.path``'s vectors (a file that gives none: a ConfigError)."""
    from pipeline.vectors import file_dimension

    try:
        return file_dimension(str(Path(str(m.pretrained.path)).expanduser()), str(m.pretrained.format))
    except DataError as e:
        raise ConfigError(f"{shown(e)} (model.pretrained.path)") from None
    except OSError as e:
        raise ConfigError(f"cannot read model.pretrained.path: {shown(e.strerror or type(e).__name__)}") from None


def training(t: Any) -> None:
    """How a model is trained."""
    _at_least("training.epochs", t.epochs, 1)
    _size("training.batch_size", t.batch_size)
    if _number("training.learning_rate", t.learning_rate) <= 0:
        raise ConfigError(f"training.learning_rate must be a positive number, got {t.learning_rate}")
    if t.clipnorm is not None and _number("training.clipnorm", t.clipnorm) <= 0:
        raise ConfigError(f"training.clipnorm must be above 0 (null: no clipping), got {t.clipnorm}")
    _at_least("training.early_stopping.patience", t.early_stopping.patience, 0)
    if t.distill.alpha is not None and not 0.0 <= _number("training.distill.alpha", t.distill.alpha) <= 1.0:
        raise ConfigError(f"training.distill.alpha must be in [0, 1] (null: the label alone), got {t.distill.alpha}")
    _within("training.distill.folds", t.distill.folds, 2, 100)
    if t.threads is not None:
        _within("training.threads", t.threads, 1, 4096)
    _within("training.verbose", t.verbose, 0, 2)


def tracking(t: Any) -> None:
    """The store's address and the retry policy (the store itself is opened by the preflight)."""
    if not str(t.uri).strip():
        raise ConfigError("tracking.uri is empty; give a store (sqlite:///path/mlflow.db, http://host:5000) or leave it out")
    if not str(t.experiment_name).strip():
        raise ConfigError("tracking.experiment_name is empty")
    for what in ("max_misclassified", "max_retries", "backoff_factor"):
        _at_least(f"tracking.{what}", t[what], 0)
    if _number("tracking.connect_timeout", t.connect_timeout) <= 0:
        raise ConfigError(f"tracking.connect_timeout must be above 0 seconds, got {t.connect_timeout}")


def baseline(b: Any) -> None:
    """The TF-IDF baseline's grid and n-gram ranges."""
    grid = list(b.C)
    if not grid or any(_number("baseline.C", c) <= 0 for c in grid):
        raise ConfigError(f"baseline.C must be a non-empty list of numbers above 0, got {shown(grid)}")
    for what in ("word_ngrams", "char_ngrams"):
        pair = list(b[what])
        if len(pair) != 2 or not 1 <= _number(f"baseline.{what}", pair[0]) <= _number(f"baseline.{what}", pair[1]):
            raise ConfigError(f"baseline.{what} must be [min n, max n] with 1 <= min n <= max n, got {shown(pair)}")
    _at_least("baseline.min_df", b.min_df, 1)


def tuner(cfg: DictConfig) -> None:
    """Every tuner setting, and the rules between them and the training settings (the search
    space: pipeline/validate.py)."""
    t = cfg.tuner
    schema = OmegaConf.get_type(t)
    if schema in TUNER_SCHEMAS.values() and schema is not TUNER_SCHEMAS[str(t.name)]:
        raise ConfigError(f"tuner.name={t.name} names another tuner than this tuner section's; choose a tuner with tuner={t.name}")
    budget = {"hyperband": (("max_epochs", 1), ("factor", 2), ("hyperband_iterations", 1)),
              "bayesian": (("max_trials", 1), ("num_initial_points", 1))}.get(str(t.name), (("max_trials", 1),))
    for what, low in (*budget, ("executions_per_trial", 1), ("max_retries_per_trial", 0), ("max_consecutive_failed_trials", 1),
                      ("workers", 0), ("rank", 0)):
        _at_least(f"tuner.{what}", t[what], low)
    _within("tuner.seed", t.seed, 0, MAX_SEED)
    if str(t.name) == "hyperband" and str(cfg.training.lr_schedule) == "cosine" and int(t.max_epochs) > int(cfg.training.epochs):
        # Keras's CosineDecay holds its last rate, 0, past its horizon: those epochs would train nothing
        raise ConfigError(
            f"tuner.max_epochs={t.max_epochs} trains past training.epochs={cfg.training.epochs}, where the cosine schedule "
            f"has brought the learning rate to 0; set training.epochs={t.max_epochs} as well, or training.lr_schedule=constant"
        )
    if t.oracle_port is not None:
        _within("tuner.oracle_port", t.oracle_port, 1, 65535)
    tuner_location(t)
    name = t.final.registered_model_name
    if name is not None and (not str(name).strip() or any(c in str(name) for c in "/:")):
        raise ConfigError("tuner.final.registered_model_name must be a name without '/' or ':' (MLflow's rule), or null for none")
    sv = t.final.seed_variance
    if sv.top_k < 0 or len(set(_seeds("tuner.final.seed_variance.seeds", sv.seeds))) < 2 and sv.top_k > 0:
        raise ConfigError(
            f"tuner.final.seed_variance needs top_k >= 0 and, when on, at least two different seeds; got top_k={sv.top_k} seeds={list(sv.seeds)}"
        )
    alpha = t.final.distill.alpha
    if alpha is not None and not 0.0 <= _number("tuner.final.distill.alpha", alpha) <= 1.0:
        raise ConfigError(f"tuner.final.distill.alpha must be in [0, 1] (null: the label alone), got {alpha}")
    cv_folds(cfg)
    prune(t)
    if str(cfg.training.fit_on) != "train":
        raise ConfigError(
            "a search scores its trials on the validation split, so training.fit_on must be train "
            "(the final model is trained on train+validation by tuner.final.refit=true)"
        )
    seeds = _seeds("tuner.final.ensemble.seeds", t.final.ensemble.seeds)
    if len(set(seeds)) != len(seeds) or int(cfg.seed) in seeds:
        raise ConfigError(
            f"tuner.final.ensemble.seeds must be different seeds, none of them the search's seed ({cfg.seed}); got {seeds}"
        )


def prune(t: Any) -> None:
    """``tuner.prune``: its thresholds, and no rule where the tuner stops trials itself."""
    p = t.prune
    _at_least("tuner.prune.min_trials", p.min_trials, 1)
    _at_least("tuner.prune.min_epochs", p.min_epochs, 1)
    if str(p.rule) == "none":
        return
    if str(t.name) == "hyperband":
        raise ConfigError("tuner.prune.rule=median stops trials early, as Hyperband's rounds do already: use tuner.prune.rule=none with tuner=hyperband")


def tuner_location(t: Any) -> None:
    """``tuner.directory`` is absolute and ``tuner.project_name`` one folder inside it."""
    if not Path(str(t.directory)).is_absolute():
        raise ConfigError(f"tuner.directory (by default paths.tuner_dir) must be an absolute path, got {t.directory!r}")
    name = str(t.project_name)
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(
            f"tuner.project_name must be one folder name inside tuner.directory, got {name!r} "
            f"(it defaults to dataset.name-model.name-seedN: check those)"
        )


def fold_count(cfg: DictConfig, labels: Any, classes: List[str]) -> int:
    """The number of folds ``tuner.cv_folds`` asks for on these labelled texts (train +
    validation's class ids; 1: no folds), checked: no more folds than the smallest class has texts.

    ``auto``: ``tuner.cv_auto.folds`` below ``tuner.cv_auto.below`` labelled texts, none above it.
    """
    import numpy as np

    spec = cv_folds(cfg)
    labels = np.asarray(labels, dtype="int64")
    if spec is None:
        auto = cfg.tuner.cv_auto
        # without the refit there would be no final model: auto then stays on the validation split
        folds = int(auto.folds) if len(labels) < int(auto.below) and cfg.tuner.final.refit else 1
    else:
        folds = spec
    if folds > 1:
        counts = np.bincount(labels, minlength=len(classes))
        if folds > int(counts.min()):
            raise ConfigError(
                f"tuner.cv_folds={folds} is more folds than class {shown(repr(classes[int(np.argmin(counts))]))} has texts in "
                f"train+validation ({int(counts.min())}); use at most {int(counts.min())} folds, or tuner.cv_folds=1"
            )
    return folds


def cv_folds(cfg: DictConfig) -> Optional[int]:
    """``tuner.cv_folds`` and ``tuner.cv_auto`` as far as they can be checked before any data is
    read; returns K, or None for ``auto``."""
    spec = str(cfg.tuner.cv_folds).strip().lower()
    auto = cfg.tuner.cv_auto
    if auto.folds < 2 or auto.below < 0:
        raise ConfigError(f"tuner.cv_auto needs folds >= 2 and below >= 0, got folds={auto.folds} below={auto.below}")
    if spec == "auto":
        return None
    folds = whole_number(spec)
    if folds is None or folds < 1:
        raise ConfigError(f"tuner.cv_folds must be auto, 1 (no folds) or at least 2, got {shown(str(cfg.tuner.cv_folds))}")
    if folds > 1 and not cfg.tuner.final.refit:
        raise ConfigError("a trial scored on folds has no single model: tuner.cv_folds needs tuner.final.refit=true")
    return folds
