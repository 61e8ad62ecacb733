"""One validation pass over a composed config (train or tune), before anything is created.

Owns when and how a config is checked, and the checks of the whole: that each key is a setting of
the schema (also one added with ``+`` or by a user's own ``conf/`` file), that none is left ``???``
and every interpolation resolves, and, for a search, that the model builds at both ends of every
search-space range. The range of each setting and the rules between settings are
pipeline/limits.py's. :func:`check` runs it once per config, from the Hydra callback
:class:`Validate` (before Hydra creates the job's output directory) and from the train and tune
entry points (before the tracking store or a tuner project is opened). The types and the values of
enum-like settings are the schema's (pipeline/config.py), refused when Hydra composes the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from typing import Any, Dict, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import limits
from pipeline.config import TUNER_SCHEMAS, TrainConfig, TuneConfig, TunerConfig
from pipeline.errors import ConfigError, first_line, shown

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
    limits.sections(cfg)
    return search_space(cfg) if tune else None


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


def search_space(cfg: DictConfig) -> Any:
    """The space's entries, then the model built with each end of each entry (min and max, each
    choice, both booleans), every other setting as configured: a range that reaches a size no
    model has is refused here, not by every trial that draws it."""
    from pipeline import search_space as space
    from pipeline.model import DataShape, build_model

    hp = space.compile_space(cfg.search_space)
    # the data's vocabulary (at most dataset.vocab_size) changes nothing the other settings allow
    shape = DataShape(vocab_size=min(int(cfg.dataset.vocab_size), 1000), num_classes=2)
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
                limits.model(trial.model)
                limits.training(trial.training)
                build_model(trial, shape)
            except ConfigError as e:
                raise ConfigError(f"{where} cannot be trained: {e}") from None
            except Exception as e:  # noqa: BLE001 - whatever Keras refuses, in one line
                raise ConfigError(f"{where} cannot be trained: {type(e).__name__}: {shown(first_line(e))}") from None
    _PASSED[built] = True
    return hp
