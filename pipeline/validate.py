"""One validation pass over a composed config (train or tune), before anything is created.

Owns every check of a config value that needs no data: that each key is a setting of the schema
(also one added with ``+`` or by a user's own ``conf/`` file), that none is left ``???``, the range
of each number, the rules between settings, and, for a search, that the model builds at both ends
of every search-space range. :func:`check` runs it once per config, from the Hydra callback
:class:`Validate` (before Hydra creates the job's output directory) and from the train and tune
entry points (before the tracking store or a tuner project is opened). The types and the values of
enum-like settings are the schema's (pipeline/config.py), refused when Hydra composes the config.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import TUNER_SCHEMAS, TrainConfig, TuneConfig, TunerConfig
from pipeline.errors import ConfigError, first_line, shown

#: What ``model.name`` may be: a Keras model's name is a TensorFlow scope name.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Keras, NumPy and Python seeds: 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
#: Configs that passed, by content: the callback's and the entry point's pass run once.
_PASSED: Dict[str, Any] = {}


class Refused(BaseException):
    """A config refused by :class:`Validate`. A BaseException, because Hydra turns an Exception
    raised by a callback into a warning and runs the job anyway; ``pipeline.cli`` prints ``error``."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


class Validate(Callback):
    """``hydra.callbacks.validate``: the pass, before Hydra creates the job's output directory;
    for a multirun of Hydra's basic sweeper, over every job before the sweep's parent run opens
    (other sweepers choose values as they go: each job is checked by its entry point)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check(config)
        except ConfigError as e:
            raise Refused(e) from None

    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None, **kwargs: Any) -> None:
        from hydra import compose
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            return
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        for job in (job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch):
            try:
                check(compose(config_name, overrides=job))
            except ConfigError as e:
                raise Refused(ConfigError(f"{e} (job {' '.join(job)})")) from None


def check(cfg: DictConfig) -> Any:
    """Refuse the first bad setting with a :class:`ConfigError`; for a search, returns its
    compiled space (keras_tuner.HyperParameters), else None."""
    try:
        digest = _digest({k: cfg[k] for k in cfg if k != "hydra"})  # Hydra's own node resolves only in a job
        if digest not in _PASSED:
            _PASSED[digest] = _check(cfg)
        return _PASSED[digest]
    except OmegaConfBaseException as e:  # a value that does not resolve (``${oc.env:UNSET}``), or of a wrong type
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{shown(key) + ': ' if key and str(key) not in first_line(e) else ''}{first_line(e)}") from None


def _digest(sections: Dict[str, Any]) -> str:
    """What identifies a config: its values, every interpolation resolved (else an OmegaConf error)."""
    plain = {k: OmegaConf.to_container(v, resolve=True, enum_to_str=True) if OmegaConf.is_config(v) else v for k, v in sections.items()}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _check(cfg: DictConfig) -> Any:
    tune = "tuner" in cfg
    unknown_keys(cfg, TuneConfig if tune else TrainConfig)
    missing = sorted(m for k in cfg if k != "hydra" for m in ([k] if OmegaConf.is_missing(cfg, k) else
                     OmegaConf.missing_keys(cfg[k]) if OmegaConf.is_config(cfg[k]) else []))
    if missing:
        raise ConfigError(f"{missing[0]} has no value (???); set it, e.g. {missing[0]}=...")
    dataset(cfg.dataset)
    model(cfg.model)
    training(cfg.training)
    tracking(cfg.tracking)
    baseline(cfg.baseline)
    _within("seed", cfg.seed, 0, MAX_SEED)
    return tuner(cfg) if tune else None


# --- keys -------------------------------------------------------------------------------------


def _fields(schema: type) -> Dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def closest(name: str, options: List[str], prefix: str = "") -> str:
    """``; did you mean <prefix><option>?`` for the option nearest ``name``, else the options there are."""
    near = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if near:
        return f"; did you mean {prefix}{near[0]}?"
    return f"; {prefix.rstrip('.') or 'the config'} has {', '.join(options)}"


def unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Every key of ``cfg`` is a field of ``schema`` (nested sections followed), whichever way it
    got there: a ``+key=`` override, a ``conf/`` file of the user's, a config without the schema."""
    fields = _fields(schema)
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{shown(path)} is not a setting{closest(str(key), list(fields), prefix)}")
        kind = fields[key]
        if key == "tuner" and kind is TunerConfig and not prefix:  # the schema its tuner= option composed
            found = OmegaConf.get_type(cfg, "tuner")
            kind = found if found in TUNER_SCHEMAS.values() else TUNER_SCHEMAS.get(str(cfg.tuner.get("name", "")), TunerConfig)
        if dataclasses.is_dataclass(kind) and not OmegaConf.is_missing(cfg, key) and isinstance(cfg[key], DictConfig):
            unknown_keys(cfg[key], kind, f"{path}.")


# --- values -----------------------------------------------------------------------------------


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number, got {shown(value)}")
    return float(value)


def _at_least(path: str, value: Any, low: int) -> None:
    if value is not None and _number(path, value) < low:
        raise ConfigError(f"{path} must be at least {low}, got {value}" if low else f"{path} must be 0 or more, got {value}")


def _within(path: str, value: Any, low: float, high: float) -> None:
    if not low <= _number(path, value) <= high:
        raise ConfigError(f"{path} must be between {low:g} and {high:g}, got {value}")


def _existing_file(path: Any, what: str) -> None:
    p = Path(str(path)).expanduser()
    if p.is_dir():
        raise ConfigError(f"data file is a directory: {shown(p)} ({what} names one file; one file per class: dataset.class_files)")
    if not p.is_file():
        raise ConfigError(f"data file not found: {shown(p)} ({what})")


def split_sizes(ds: Any) -> None:
    """``val_size`` and ``test_size``, as given (not rescaled), and their sum where both are cut."""
    for what in ("val", "test"):
        if not 0.0 < _number(f"dataset.{what}_size", getattr(ds, f"{what}_size")) < 1.0:
            raise ConfigError(f"dataset.{what}_size must be between 0 and 1, got {getattr(ds, f'{what}_size')}")
    if float(ds.val_size) + float(ds.test_size) >= 1.0 and ds.val_path is None and ds.test_path is None:
        raise ConfigError(f"dataset.val_size + dataset.test_size must be below 1, got {ds.val_size} + {ds.test_size}")


def sequence_settings(ds: Any) -> Optional[int]:
    """``sequence_length`` (a positive integer, or ``auto`` with its percentile and cap); returns the integer."""
    spec = str(ds.sequence_length).strip().lower()
    if spec != "auto":
        if not spec.isdigit() or int(spec) < 1:
            raise ConfigError(f"dataset.sequence_length must be a positive integer or auto, got {shown(repr(ds.sequence_length))}")
        return int(spec)
    percentile = _number("dataset.length_percentile", ds.length_percentile)
    if not 0 < percentile <= 100:
        raise ConfigError(f"dataset.length_percentile must be above 0 and at most 100, got {ds.length_percentile}")
    _at_least("dataset.max_sequence_length", ds.max_sequence_length, 1)
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
        for label, path in (ds.class_files or {}).items():
            _existing_file(path, f"dataset.class_files.{label}")
    for what in ("text", "label"):
        column = str(getattr(ds, f"{what}_column"))
        if not column.strip():
            raise ConfigError(f"dataset.{what}_column is empty; give a column name or a 0-based index")
        if column.strip().startswith("-") and column.strip()[1:].isdigit():
            raise ConfigError(f"dataset.{what}_column {column}: a column index counts from 0, got a negative one")
    if str(ds.text_column) == str(ds.label_column):
        raise ConfigError(f"dataset.text_column and dataset.label_column are the same column ({shown(ds.text_column)})")
    if ds.delimiter is not None:
        if len(str(ds.delimiter)) != 1:
            raise ConfigError(f"dataset.delimiter must be one character, got {shown(repr(ds.delimiter))}")
        if str(ds.delimiter) in '"\r\n':
            raise ConfigError(f"dataset.delimiter cannot be a line break or the quote character, got {shown(repr(ds.delimiter))}")
    try:
        codecs.lookup(str(ds.encoding))
    except LookupError:
        raise ConfigError(f"unknown encoding {shown(repr(ds.encoding))} (dataset.encoding)") from None
    _at_least("dataset.max_samples", ds.max_samples, 1)
    split_sizes(ds)
    _at_least("dataset.vocab_size", ds.vocab_size, 3)
    sequence_settings(ds)


def model(m: Any) -> None:
    """The sizes and rates a model is built from (``build_model`` refuses the same), and its name."""
    if not MODEL_NAME.fullmatch(str(m.name)):
        # not echoed: a name may interpolate a secret (${oc.env:...}), and this line goes to the terminal
        raise ConfigError("model.name may hold only letters, digits, '_', '.' and '-', starting with a letter or digit "
                          "(it names the Keras model, whose scope names allow no more)")
    for what in ("embedding_dim", "units", "num_layers"):
        _at_least(f"model.{what}", m[what], 1)
    for what in ("dropout", "recurrent_dropout"):
        if not 0.0 <= _number(f"model.{what}", m[what]) < 1.0:
            raise ConfigError(f"model.{what} must be in [0, 1), got {m[what]}")
    if m.pretrained.path:
        p = Path(str(m.pretrained.path)).expanduser()
        if not p.is_file():
            raise ConfigError(f"pretrained vectors file not found: {shown(p)} (model.pretrained.path)")


def training(t: Any) -> None:
    """How a model is trained."""
    _at_least("training.epochs", t.epochs, 1)
    _at_least("training.batch_size", t.batch_size, 1)
    if _number("training.learning_rate", t.learning_rate) <= 0:
        raise ConfigError(f"training.learning_rate must be a positive number, got {t.learning_rate}")
    if t.clipnorm is not None and _number("training.clipnorm", t.clipnorm) <= 0:
        raise ConfigError(f"training.clipnorm must be above 0 (null: no clipping), got {t.clipnorm}")
    _at_least("training.early_stopping.patience", t.early_stopping.patience, 0)
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


def tuner(cfg: DictConfig) -> Any:
    """Every tuner setting, the rules between them and the training settings, and the search
    space: each entry's shape, then a model built at each end of it; returns the compiled space."""
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
    if t.oracle_port is not None:
        _within("tuner.oracle_port", t.oracle_port, 1, 65535)
    tuner_location(t)
    name = t.final.registered_model_name
    if name is not None and (not str(name).strip() or any(c in str(name) for c in "/:")):
        raise ConfigError("tuner.final.registered_model_name must be a name without '/' or ':' (MLflow's rule), or null for none")
    sv = t.final.seed_variance
    if sv.top_k < 0 or (sv.top_k > 0 and len(set(sv.seeds)) < 2):
        raise ConfigError(
            f"tuner.final.seed_variance needs top_k >= 0 and, when on, at least two different seeds; got top_k={sv.top_k} seeds={list(sv.seeds)}"
        )
    cv_folds(cfg)
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
    return search_space(cfg)


def tuner_location(t: Any) -> None:
    """``tuner.directory`` is absolute and ``tuner.project_name`` one folder inside it."""
    if not Path(str(t.directory)).is_absolute():
        raise ConfigError(f"tuner.directory must be an absolute path, got {t.directory!r}")
    name = str(t.project_name)
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(
            f"tuner.project_name must be one folder name inside tuner.directory, got {name!r} "
            f"(it defaults to dataset.name-model.name-seedN: check those)"
        )


def cv_folds(cfg: DictConfig) -> Optional[int]:
    """``tuner.cv_folds`` and ``tuner.cv_auto`` as far as they can be checked before any data is
    read; returns K, or None for ``auto``."""
    spec = str(cfg.tuner.cv_folds).strip().lower()
    auto = cfg.tuner.cv_auto
    if auto.folds < 2 or auto.below < 0:
        raise ConfigError(f"tuner.cv_auto needs folds >= 2 and below >= 0, got folds={auto.folds} below={auto.below}")
    if spec == "auto":
        return None
    if not spec.lstrip("-").isdigit() or int(spec) < 1:
        raise ConfigError(f"tuner.cv_folds must be auto, 1 (no folds) or at least 2, got {cfg.tuner.cv_folds}")
    return int(spec)


def search_space(cfg: DictConfig) -> Any:
    """The space's entries, then the model built with each end of each entry (min and max, each
    choice, both booleans), every other setting as configured: a range that reaches a size no
    model has is refused here, not by every trial that draws it."""
    from pipeline import search_space as space
    from pipeline.model import DataShape, build_model

    hp = space.compile_space(cfg.search_space)
    shape = DataShape(vocab_size=int(cfg.dataset.vocab_size), num_classes=2)
    built = "built:" + _digest({"space": cfg.search_space, "model": cfg.model, "training": cfg.training, "vocab": shape.vocab_size})
    if built in _PASSED:
        return hp
    described = space.describe(cfg.search_space)
    for param in hp.space:  # as Keras Tuner will draw them: a choice's values as the setting holds them
        spec = described[param.name]
        ends = list(param.values) if spec["type"] == "choice" else [False, True] if spec["type"] == "boolean" else [spec["min"], spec["max"]]
        path = param.name
        for value in ends:
            trial = space.with_values(cfg, {path: value})
            where = f"search_space.{path}: {shown(repr(value))}"
            try:
                model(trial.model)
                training(trial.training)
                build_model(trial, shape)
            except ConfigError as e:
                raise ConfigError(f"{where} cannot be trained: {e}") from None
            except Exception as e:  # noqa: BLE001 - whatever Keras refuses, in one line
                raise ConfigError(f"{where} cannot be trained: {type(e).__name__}: {shown(first_line(e))}") from None
    _PASSED[built] = True
    return hp
