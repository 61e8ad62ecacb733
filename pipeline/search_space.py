"""The YAML search space -> keras_tuner.HyperParameters.

Every searched name must be a field the model builder reads (a ``model`` field, or
``training.learning_rate`` / ``training.batch_size``), so a typo is an error rather than a
hyperparameter that silently changes nothing. The tuner is created with
``allow_new_entries=False``: model code cannot add a hyperparameter the YAML does not declare.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import keras_tuner

from pipeline.errors import ConfigError

#: Where each searchable name lives in the composed config.
SEARCHABLE = {
    "units": "model",
    "embedding_dim": "model",
    "num_layers": "model",
    "bidirectional": "model",
    "dropout": "model",
    "recurrent_dropout": "model",
    "learning_rate": "training",
    "batch_size": "training",
}
TYPES = ("int", "float", "choice", "boolean")
SAMPLINGS = ("linear", "log", "reverse_log")


def _check(name: str, spec: Any) -> None:
    where = f"search_space.{name}"
    if name not in SEARCHABLE:
        raise ConfigError(f"{where}: not a searchable setting; choose from {', '.join(SEARCHABLE)}")
    if spec.type not in TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(TYPES)}, got {spec.type!r}")
    if spec.type in ("int", "float"):
        if spec.min is None or spec.max is None:
            raise ConfigError(f"{where} needs min and max")
        if spec.min > spec.max:
            raise ConfigError(f"{where}: min {spec.min:g} is above max {spec.max:g}")
        if spec.sampling not in SAMPLINGS:
            raise ConfigError(f"{where}.sampling must be one of {', '.join(SAMPLINGS)}, got {spec.sampling!r}")
        if spec.sampling != "linear" and spec.min <= 0:
            raise ConfigError(f"{where}: {spec.sampling} sampling needs min above 0")
        if spec.step is not None and spec.step <= 0:
            raise ConfigError(f"{where}.step must be above 0")
    if spec.type == "choice" and not spec["values"]:
        raise ConfigError(f"{where}: a choice needs a non-empty list of values")


def compile_space(space: Mapping[str, Any]) -> keras_tuner.HyperParameters:
    """Validate the YAML space and declare each entry on a fresh HyperParameters."""
    if not space:
        raise ConfigError("the search space is empty; declare at least one of " + ", ".join(SEARCHABLE))
    hp = keras_tuner.HyperParameters()
    for name, spec in space.items():
        _check(name, spec)
        if spec.type == "int":
            step = int(spec.step) if spec.step else None
            hp.Int(name, int(spec.min), int(spec.max), step=step, sampling=spec.sampling)
        elif spec.type == "float":
            hp.Float(name, float(spec.min), float(spec.max), step=spec.step, sampling=spec.sampling)
        elif spec.type == "choice":
            hp.Choice(name, list(spec["values"]))
        else:
            hp.Boolean(name)
    return hp


def describe(space: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The space as plain data, without unset fields: for params and artifacts."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(space, resolve=True) if OmegaConf.is_config(space) else dict(space)
    return {
        name: {k: v for k, v in dict(spec).items() if v is not None and not (k == "sampling" and v == "linear")}
        for name, spec in plain.items()
    }
