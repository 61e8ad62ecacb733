"""The YAML search space -> keras_tuner.HyperParameters, each searched value named by its config path.

A search space maps config paths to how they are searched, written nested or dotted::

    model:
      units: {type: int, min: 32, max: 256, step: 32}
    training.learning_rate: {type: float, min: 0.0003, max: 0.01, sampling: log}

Every path must be a setting of ``model`` or ``training`` (what a trial builds and trains), and
every value the space can draw must fit that setting's type, so a typo or a wrong type is an
error before any data is read rather than a hyperparameter that silently changes nothing. A
trial is then a config update (:func:`with_values`): the model code never sees Keras Tuner. The
tuner is created with ``allow_new_entries=False``: model code cannot add a hyperparameter the
YAML does not declare.
"""

from __future__ import annotations

import copy
from enum import Enum
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Tuple

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError, first_line, shown

if TYPE_CHECKING:
    import keras_tuner

TYPES = ("int", "float", "choice", "boolean")
SAMPLINGS = ("linear", "log", "reverse_log")
FIELDS = ("type", "min", "max", "step", "sampling", "values")
#: The config sections a trial may change, and their settings that it may not (the data they
#: need is prepared once for the whole search).
ROOTS = ("model", "training")
FIXED = ("model.name", "model.pretrained")


def _plain(space: Any) -> Dict[str, Any]:
    if OmegaConf.is_config(space):
        return OmegaConf.to_container(space, resolve=True)  # type: ignore[return-value]
    return dict(space or {})


def flatten(space: Any) -> Dict[str, Any]:
    """``{config path: raw entry}``: nested mappings are followed until one has a ``type``."""
    out: Dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping) and "type" not in value and value and all(isinstance(v, Mapping) for v in value.values()):
                walk(path, value)
            else:
                out[path] = value

    walk("", _plain(space))
    return out


def _schema() -> DictConfig:
    from pipeline.config import ModelConfig, TrainingConfig

    return OmegaConf.create({"model": OmegaConf.structured(ModelConfig), "training": OmegaConf.structured(TrainingConfig)})


def _check_path(path: str, schema: DictConfig) -> None:
    where = f"search_space.{path}"
    node: Any = schema
    parts = path.split(".")
    known = parts[0] in ROOTS and not any(path == f or path.startswith(f + ".") for f in FIXED)
    for part in parts:
        if not known or not OmegaConf.is_dict(node) or part not in list(node.keys()):
            known = False
            break
        node = node._get_node(part)
    if known and not OmegaConf.is_dict(node):
        return
    hint = next((f"; did you mean {r}.{path}?" for r in ROOTS if "." not in path and path in list(schema[r].keys())), "")
    raise ConfigError(
        f"{shown(where)}: not a searchable setting{hint or ''}; a searched setting is a field of model or training "
        f"by its path, e.g. model.units, model.dropout, training.learning_rate"
    )


def _check_values(path: str, spec: Dict[str, Any], schema: DictConfig) -> List[Any]:
    """Every value the entry can draw fits the setting's type (e.g. no 2.5 for ``model.units``,
    nor a float range over it); returns them as the setting holds them (a choice's ``[0, 0.5]``
    for a float setting: ``[0.0, 0.5]``)."""
    if spec["type"] == "choice":
        values = list(spec["values"])
    elif spec["type"] == "boolean":
        values = [False, True]
    else:
        values = [spec["min"], spec["max"]] + ([(spec["min"] + spec["max"]) / 2] if spec["type"] == "float" else [])
    trial = copy.deepcopy(schema)
    held = []
    for value in values:
        try:
            OmegaConf.update(trial, path, value, merge=False)
        except Exception as e:  # noqa: BLE001 - OmegaConf's validation error, one line
            raise ConfigError(f"search_space.{path}: {shown(repr(value))} is not a valid {path}: {first_line(e)}") from None
        got = OmegaConf.select(trial, path)
        held.append(str(got) if isinstance(got, Enum) else got)
    if len({type(v) for v in held}) > 1:
        raise ConfigError(f"search_space.{path}: a choice's values must be of one type, got {shown(repr(values))}")
    return held


def _spec(path: str, raw: Any) -> Dict[str, Any]:
    """One entry as a plain dict with every field, after checking its keys and values."""
    where = shown(f"search_space.{path}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{type: int, min: 32, max: 256}}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {shown(repr(unknown[0]))}; keys are {', '.join(FIELDS)}")
    spec = {k: raw.get(k) for k in FIELDS}
    spec["sampling"] = spec["sampling"] or "linear"
    if spec["type"] not in TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(TYPES)}, got {shown(repr(spec['type']))}")
    if spec["type"] in ("int", "float"):
        lo, hi, step = spec["min"], spec["max"], spec["step"]
        if lo is None or hi is None:
            raise ConfigError(f"{where} needs min and max")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise ConfigError(f"{where}: min and max must be numbers")
        if lo > hi:
            raise ConfigError(f"{where}: min {lo:g} is above max {hi:g}")
        if spec["sampling"] not in SAMPLINGS:
            raise ConfigError(f"{where}.sampling must be one of {', '.join(SAMPLINGS)}, got {shown(repr(spec['sampling']))}")
        if spec["sampling"] != "linear" and lo <= 0:
            raise ConfigError(f"{where}: {spec['sampling']} sampling needs min above 0")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0):
            raise ConfigError(f"{where}.step must be a number above 0")
        if step is not None and spec["type"] == "int" and step != int(step):
            raise ConfigError(f"{where}.step must be a whole number for an int, got {step}")
    if spec["type"] == "choice" and (not isinstance(spec["values"], (list, tuple)) or not spec["values"]):
        raise ConfigError(f"{where}: a choice needs a non-empty list of values, got {shown(repr(spec['values']))}")
    return spec


def check_space(space: Any) -> List[Tuple[str, Dict[str, Any], List[Any]]]:
    """Validate the YAML space (paths, fields, every value it can draw), before Keras Tuner or
    TensorFlow is imported; returns each entry as (path, spec, the values it draws as held)."""
    entries = flatten(space)
    if not entries:
        raise ConfigError("the search space is empty; declare at least one setting, e.g. search_space.model.units={type:int,min:32,max:256}")
    schema = _schema()
    checked = []
    for path, raw in entries.items():
        _check_path(path, schema)
        spec = _spec(path, raw)
        checked.append((path, spec, _check_values(path, spec, schema)))
    return checked


def compile_space(space: Any) -> keras_tuner.HyperParameters:
    """Validate the YAML space and declare each entry, named by its config path, on a fresh HyperParameters."""
    checked = check_space(space)
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for path, spec, held in checked:
        try:
            _declare(hp, path, spec, held)
        except (ValueError, TypeError) as e:  # Keras Tuner's own refusal (e.g. a step for log sampling)
            raise ConfigError(f"search_space.{shown(path)}: {shown(first_line(e))}") from None
    return hp


def _declare(hp: keras_tuner.HyperParameters, path: str, spec: Dict[str, Any], held: List[Any]) -> None:
    """One entry on ``hp``, named by its config path."""
    if spec["type"] == "int":
        step = int(spec["step"]) if spec["step"] else None
        hp.Int(path, int(spec["min"]), int(spec["max"]), step=step, sampling=spec["sampling"])
    elif spec["type"] == "float":
        low, high, step = float(spec["min"]), float(spec["max"]), spec["step"]
        if step and spec["sampling"] == "linear":
            # Keras Tuner counts int((max - min) / step) steps: 0.3..0.6 by 0.1 is 2.999... steps,
            # and 0.6 would never be tried. Nudge max past the rounding so it is.
            steps = round((high - low) / float(step))
            if abs(low + steps * float(step) - high) < 1e-9 * max(1.0, abs(high)):
                high = low + (steps + 1e-6) * float(step)
        hp.Float(path, low, high, step=step, sampling=spec["sampling"])
    elif spec["type"] == "choice":
        hp.Choice(path, held)
    else:
        hp.Boolean(path)


def with_values(cfg: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with each searched value written at its config path: what a trial trains.

    Keras Tuner's own entries (``tuner/epochs``, ...) are not settings and are left out.
    """
    out = copy.deepcopy(cfg)
    for path, value in values.items():
        if not path.startswith("tuner/"):
            OmegaConf.update(out, path, value, merge=False)
    return out


def describe(space: Any) -> Dict[str, Dict[str, Any]]:
    """The space as plain data by config path, without unset fields: for params, artifacts and identity."""
    return {
        path: {k: v for k, v in dict(spec).items() if v is not None and not (k == "sampling" and v == "linear")}
        for path, spec in flatten(space).items()
    }
