"""One validation pass over a composed config (train or tune), before anything is created.

Owns when and how a config is checked, and the checks of the whole: that each key is a setting of
the schema (also one added with ``+`` or by a user's own ``conf/`` file), that none is left ``???``
and every interpolation resolves, and, for a search, that the model builds at both ends of every
search-space range. The range of each setting and the rules between settings are
pipeline/limits.py's. :func:`check` runs it once per config, from the Hydra callback
:class:`Validate` (before Hydra creates the job's output directory) and from the train and tune
entry points (before the tracking store or a tuner project is opened). The callback also reads
the data, after the settings and before anything that imports TensorFlow (the search space's
models): a bad data file is one line in seconds with nothing created, and the job takes those
splits (:func:`splits`) instead of reading them again. The types and the values of
enum-like settings are the schema's (pipeline/config.py), refused when Hydra composes the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import limits
from pipeline.config import TUNER_SCHEMAS, TrainConfig, TuneConfig, TunerConfig
from pipeline.errors import ConfigError, PipelineError, first_line, shown

#: Configs that passed, by content: the callback's and the entry point's pass run once.
_PASSED: Dict[str, Any] = {}
#: The splits the callback read, by what they were read from, until the job takes them.
_SPLITS: Dict[str, Any] = {}
#: The stores (their tracking settings' digest) a single run's pass checked, until its job starts.
_STORES: set = set()


class Refused(BaseException):
    """A config refused by :class:`Validate`. A BaseException, because Hydra turns an Exception
    raised by a callback into a warning and runs the job anyway; ``pipeline.cli`` prints ``error``
    (a :class:`ConfigError`, or what Hydra or OmegaConf raised composing a sweep's ``job``)."""

    def __init__(self, error: Exception, job: Optional[List[str]] = None) -> None:
        super().__init__(str(error))
        self.error, self.job = error, job


class Validate(Callback):
    """``hydra.callbacks.validate``: the pass, before Hydra creates the job's output directory;
    for a multirun, over its jobs before the sweep's parent run or directory is made: every job of
    Hydra's basic sweeper, and for a sweeper that chooses values as it goes (Optuna, Nevergrad),
    each value it can draw at the ends of its ranges (:func:`sweep_jobs`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            _no_chdir(config)
            check(config, models=False)
            _check_store(config)
            _read(config)
            check(config)
            _output_dir(config, "run")
            _STORES.add(_digest(config.tracking))  # the job need not check it again
        except PipelineError as e:  # a setting (ConfigError), the data (DataError) or the store (TrackingError)
            raise Refused(e) from None

    def on_multirun_start(self, config: DictConfig, config_name: Optional[str] = None, **kwargs: Any) -> None:
        from hydra import compose

        basic = str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper")
        try:
            _no_chdir(config)
            sweeper_direction(config)
            _check_store(config)
            jobs = sweep_jobs(config, every=basic)
        except PipelineError as e:  # a glob() that matches no option, a sweeper going the wrong way, the store
            raise Refused(e) from None
        read: set = set()
        for job in jobs:
            try:
                cfg = compose(config_name, overrides=job)
                check(cfg)
                # each distinct dataset's files, once, as a single run's pass reads them (a bad file
                # or too few texts for the folds); the job reads them again itself
                read_as = {k: v for k, v in cfg.dataset.items() if k not in NOT_READING}
                data_key = _digest({"dataset": read_as, "pretrained": cfg.model.pretrained,
                                    "folds": [cfg.tuner.cv_folds, cfg.tuner.cv_auto, cfg.tuner.final.refit] if "tuner" in cfg else None})
                if data_key not in read:
                    read.add(data_key)
                    _read(cfg, keep=False)
            except (PipelineError, HydraException, OmegaConfBaseException) as e:  # a value the job's key does not take
                raise Refused(e, job) from None
        try:
            _output_dir(config, "sweep")
        except PipelineError as e:
            raise Refused(e) from None


def _no_chdir(config: DictConfig) -> None:
    """``hydra.job.chdir=true`` would run the job in its output directory: a relative
    ``dataset.path`` not found there, the store (``mlruns/``) made there, out of reach of
    ``compare`` and ``rerun`` run where the user is. Refused in one line."""
    if OmegaConf.select(config, "hydra.job.chdir") is True:
        raise ConfigError("hydra.job.chdir=true is not supported: the pipeline reads relative paths (dataset.path, paths.*) "
                          "and keeps its store where you run it; leave it false (each job's files are in its output directory anyway)")


def _output_dir(config: DictConfig, mode: str) -> None:
    """Hydra's output directory for the run (``hydra.run.dir``) or the sweep (``hydra.sweep.dir``),
    made here, last in the pass, as Hydra would make it next: where it cannot be (a file in its
    path, a directory that cannot be written), one line, before a sweep's parent run is opened
    (Hydra's traceback came after it, the run left RUNNING)."""
    key = f"hydra.{mode}.dir"
    try:
        directory = Path(str(OmegaConf.select(config, key)))
    except OmegaConfBaseException:  # it names what Hydra sets only as the job starts (${hydra:runtime.choices.model}): Hydra's to make
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{key}={directory}: cannot make the directory ({e.strerror or e}); name another") from None


#: Dataset settings that change what is done with the texts once read, not what is read: a sweep
#: over them reads its data once in the pass before the sweep.
NOT_READING = frozenset({"name", "vocab_size", "sequence_length", "length_percentile", "max_sequence_length", "lowercase",
                         "strip_punctuation", "split_punctuation"})


def _check_store(config: DictConfig) -> None:
    """The store a job records to answers (``pipeline.tracking.check_store``), checked here, before
    Hydra makes the job's directory or a sweep's parent run is opened. What the check itself raises
    that is not the pipeline's error (a URI the socket library cannot read) is one line too: Hydra
    would turn it into a warning and make the job's directory anyway."""
    from pipeline import tracking
    from pipeline.errors import TrackingError
    from pipeline.redact import redact

    try:
        tracking.check_store(config.tracking)
    except PipelineError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to reach the store means the same to the user
        raise TrackingError(f"cannot use MLflow tracking store {redact(str(config.tracking.uri))}: {first_line(e)}") from None


def sweeper_direction(config: DictConfig) -> None:
    """A sweeper that optimises what each job returns (Optuna's ``direction``, Nevergrad's
    ``optim.maximize``) must go the objective's way: both minimise by default, and a job returns
    ``training.objective`` (``pipeline tune``: ``tuner.objective``), an accuracy unless it names a
    loss. Unchecked: several directions (Optuna's multi-objective), which a job returning one number
    cannot meet anyway."""
    sweeper = config.hydra.sweeper
    objective = str(config.tuner.objective if "tuner" in config else config.training.objective)
    wanted = "minimize" if objective.endswith("loss") else "maximize"
    if "direction" in sweeper and not OmegaConf.is_list(sweeper.direction):
        given, key = str(sweeper.direction).rsplit(".", 1)[-1].lower(), "hydra.sweeper.direction"
    elif "optim" in sweeper and "maximize" in sweeper.optim:
        given, key = ("maximize" if sweeper.optim.maximize else "minimize"), "hydra.sweeper.optim.maximize"
    else:
        return
    if given != wanted:
        fix = f"{key}={wanted}" if key.endswith("direction") else f"{key}={str(wanted == 'maximize').lower()}"
        default = " (its default)" if given == "minimize" else ""
        better = "higher" if wanted == "maximize" else "lower"
        raise ConfigError(f"the sweeper would {given}{default} {objective}, which each job returns and where {better} is better: add {fix}")


def _group_options(group: str) -> List[str]:
    """The options of a config group (``model``: ``bilstm``, ``lstm``, ...), as Hydra's sweeper
    expands a ``glob()`` over them; none for a key that is not a group."""
    from hydra.core.global_hydra import GlobalHydra

    return sorted(GlobalHydra.instance().config_loader().get_group_options(group.lstrip("+~")))


#: Jobs checked for a sweeper that draws its values: the product of the ends, at most this many.
ENDS_CHECKED = 256


def sweep_jobs(config: DictConfig, every: bool) -> List[List[str]]:
    """The jobs of a multirun as override lists, from its command-line overrides and the sweeper's
    own ``params`` (Hydra's override grammar, read with its public parser): with ``every``, each
    job the basic sweeper runs (the product of every list, choice and range); otherwise the values
    a sweeper that draws can reach at their ends: each choice, a range's first and last value (for
    Optuna, which draws from a range with its end included, the end itself), an
    interval's two ends and a fraction between them (as a sweeper draws: a float where the
    setting may need an integer)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob, IntervalSweep

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    inclusive = "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower()
    axes: List[List[str]] = []
    for override in OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task]):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes.append([override.input_line])
            continue
        value = override.value()
        if isinstance(value, Glob):  # a config group's options by pattern: expanded as Hydra's sweeper will
            options = _group_options(override.key_or_group)
            names = value.filter(options)
            if not names:
                raise ConfigError(f"{shown(override.input_line)} matches no option of the config group {shown(override.key_or_group)}"
                                  + (f" ({', '.join(options)})" if options else " (glob() chooses among a config group's options)"))
            axes.append([f"{key}={name}" for name in names])
            continue
        if isinstance(value, IntervalSweep):
            # its ends, and a draw from inside: a fraction, as the floats Optuna draws are
            values = [value.start, value.end, value.start + (value.end - value.start) * 0.318]
            axes.append([f"{key}={v!r}" for v in dict.fromkeys(values)])
            continue
        values = [f"{key}={v}" for v in override.sweep_string_iterator()]
        if not every and override.is_range_sweep() and inclusive and not value.shuffle and value.stop is not None:
            # Optuna draws an int range from [start, stop], its end included (an IntUniformDistribution)
            values.append(f"{key}={value.stop}")
        axes.append(values if every else list(dict.fromkeys([values[0], values[-1]] if override.is_range_sweep() else values)))
    jobs = itertools.product(*axes)
    return [list(job) for job in (jobs if every else itertools.islice(jobs, ENDS_CHECKED))]


def _splits_key(cfg: DictConfig) -> str:
    return _digest({"dataset": cfg.dataset, "seed": cfg.seed})


def _read(cfg: DictConfig, keep: bool = True) -> None:
    """The dataset's splits, read once the settings have passed (a bad file: a DataError), kept
    for the job (``keep=False``: only checked, as for a sweep's jobs, which each read their own).
    A failure that is not the pipeline's own error is left to the job, which reads the data again
    and reports it."""
    from pipeline import data

    try:
        splits = data.load_splits(cfg.dataset, cfg.seed)
        if keep:
            _SPLITS[_splits_key(cfg)] = splits
    except PipelineError:
        raise
    except Exception:  # noqa: BLE001 - Hydra would turn it into a warning; the job tells it whole
        return
    if cfg.model.pretrained.path:  # a data file too: every line, before anything is created
        from pipeline.vectors import check_file

        check_file(str(cfg.model.pretrained.path), str(cfg.model.pretrained.format))
    if "tuner" in cfg:  # a search's folds need as many texts in each class
        import numpy as np

        limits.fold_count(cfg, np.concatenate([splits.label_ids(splits.train), splits.label_ids(splits.val)]), splits.classes)


def store_checked(tracking_cfg: Any) -> bool:
    """Whether this run's pass checked the store already (a single run's; a sweep's jobs, which
    may start hours after the sweep's pass, or in another process, check it themselves). Once."""
    key = _digest(tracking_cfg)
    found = key in _STORES
    _STORES.discard(key)
    return found


def splits(cfg: DictConfig) -> Any:
    """The splits the callback read for this dataset and seed, else read now (a rerun, a test)."""
    from pipeline import data

    kept = _SPLITS.pop(_splits_key(cfg), None)
    return kept if kept is not None else data.load_splits(cfg.dataset, cfg.seed)


def check(cfg: DictConfig, models: bool = True) -> Any:
    """Refuse the first bad setting with a :class:`ConfigError`; for a search, returns its
    compiled space (keras_tuner.HyperParameters), else None. ``models=False`` leaves out what
    needs TensorFlow (compiling the space, building a model at each of its ends) and returns None."""
    try:
        digest = _digest({k: cfg[k] for k in cfg if k != "hydra"})  # Hydra's own node resolves only in a job
        key = digest if models else f"settings:{digest}"
        if key not in _PASSED:
            _PASSED[key] = _check(cfg, models)
        return _PASSED[key]
    except OmegaConfBaseException as e:  # a value that does not resolve (``${oc.env:UNSET}``), or of a wrong type
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{shown(key) + ': ' if key and str(key) not in first_line(e) else ''}{first_line(e)}") from None


def _digest(sections: Dict[str, Any]) -> str:
    """What identifies a config: its values, every interpolation resolved (else an OmegaConf error)."""
    plain = {k: OmegaConf.to_container(v, resolve=True, enum_to_str=True) if OmegaConf.is_config(v) else v for k, v in sections.items()}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _check(cfg: DictConfig, models: bool = True) -> Any:
    tune = "tuner" in cfg
    unknown_keys(cfg, TuneConfig if tune else TrainConfig)
    missing = sorted(m for k in cfg if k != "hydra" for m in ([k] if OmegaConf.is_missing(cfg, k) else
                     OmegaConf.missing_keys(cfg[k]) if OmegaConf.is_config(cfg[k]) else []))
    if missing:
        raise ConfigError(f"{missing[0]} has no value (???); set it, e.g. {missing[0]}=...")
    limits.sections(cfg)
    if tune and models:  # the models built here run TensorFlow: its pools are fixed from then on
        from pipeline.experiment import use_threads

        use_threads(cfg.training.threads)
    return search_space(cfg, models) if tune else None


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


def search_space(cfg: DictConfig, models: bool = True) -> Any:
    """The space's entries, then the model built with each end of each entry (min and max, each
    choice, both booleans), every other setting as configured: a range that reaches a size no
    model has is refused here, not by every trial that draws it. ``models=False``: the entries and
    each end's settings only (no TensorFlow, no Keras Tuner); returns None."""
    from pipeline import search_space as space

    # the space as written, then each end in range: before TensorFlow is imported (a refusal in ~4 s, not ~11)
    checked = space.check_space(cfg.search_space)
    # the data's vocabulary (at most dataset.vocab_size) changes nothing the other settings allow
    vocab_size = min(int(cfg.dataset.vocab_size), 1000)
    built = "built:" + _digest({"space": cfg.search_space, "model": cfg.model, "training": cfg.training, "vocab": vocab_size})
    if models and built in _PASSED:
        return space.compile_space(cfg.search_space)
    trials = []
    for path, spec, held in checked:  # as Keras Tuner will draw them: a choice's values as the setting holds them
        ends = held if spec["type"] == "choice" else [False, True] if spec["type"] == "boolean" else [spec["min"], spec["max"]]
        for value in ends:
            trial = space.with_values(cfg, {path: value})
            where = f"search_space.{path}: {shown(repr(value))}"
            try:
                limits.model(trial.model)
                limits.training(trial.training)
            except ConfigError as e:
                if path == "model.embedding_dim" and cfg.model.pretrained.path:
                    raise ConfigError(f"search_space.model.embedding_dim: the vectors in model.pretrained.path fix it at "
                                      f"{limits.pretrained_dimension(cfg.model)}; leave it out of the search "
                                      f"(~search_space.model.embedding_dim)") from None
                raise ConfigError(f"{where} cannot be trained: {e}") from None
            trials.append((where, trial))
    if not models:
        return None
    hp = space.compile_space(cfg.search_space)  # Keras Tuner's own refusals (a step with log sampling)
    from pipeline.model import DataShape, build_model

    shape = DataShape(vocab_size=vocab_size, num_classes=2)
    for where, trial in trials:
        try:
            build_model(trial, shape)
        except ConfigError as e:
            raise ConfigError(f"{where} cannot be trained: {e}") from None
        except Exception as e:  # noqa: BLE001 - whatever Keras refuses, in one line
            raise ConfigError(f"{where} cannot be trained: {type(e).__name__}: {shown(first_line(e))}") from None
    _PASSED[built] = True
    return hp
