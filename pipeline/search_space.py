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
    "pooling": "model",
    "learning_rate": "training",
    "batch_size": "training",
}
TYPES = ("int", "float", "choice", "boolean")
SAMPLINGS = ("linear", "log", "reverse_log")


FIELDS = ("type", "min", "max", "step", "sampling", "values")


def _spec(name: str, raw: Any) -> Dict[str, Any]:
    """One entry as a plain dict with every field, after checking its keys and values."""
    where = f"search_space.{name}"
    if name not in SEARCHABLE:
        raise ConfigError(f"{where}: not a searchable setting; choose from {', '.join(SEARCHABLE)}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping like {{type: int, min: 32, max: 256}}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; keys are {', '.join(FIELDS)}")
    spec = {k: raw.get(k) for k in FIELDS}
    spec["sampling"] = spec["sampling"] or "linear"
    if spec["type"] not in TYPES:
        raise ConfigError(f"{where}.type must be one of {', '.join(TYPES)}, got {spec['type']!r}")
    if spec["type"] in ("int", "float"):
        lo, hi, step = spec["min"], spec["max"], spec["step"]
        if lo is None or hi is None:
            raise ConfigError(f"{where} needs min and max")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise ConfigError(f"{where}: min and max must be numbers")
        if lo > hi:
            raise ConfigError(f"{where}: min {lo:g} is above max {hi:g}")
        if spec["sampling"] not in SAMPLINGS:
            raise ConfigError(f"{where}.sampling must be one of {', '.join(SAMPLINGS)}, got {spec['sampling']!r}")
        if spec["sampling"] != "linear" and lo <= 0:
            raise ConfigError(f"{where}: {spec['sampling']} sampling needs min above 0")
        if step is not None and (not isinstance(step, (int, float)) or step <= 0):
            raise ConfigError(f"{where}.step must be a number above 0")
    if spec["type"] == "choice" and not spec["values"]:
        raise ConfigError(f"{where}: a choice needs a non-empty list of values")
    return spec


def _plain(space: Any) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(space, resolve=True) if OmegaConf.is_config(space) else dict(space)  # type: ignore[return-value]


def compile_space(space: Any) -> keras_tuner.HyperParameters:
    """Validate the YAML space and declare each entry on a fresh HyperParameters."""
    plain = _plain(space)
    if not plain:
        raise ConfigError("the search space is empty; declare at least one of " + ", ".join(SEARCHABLE))
    hp = keras_tuner.HyperParameters()
    for name, raw in plain.items():
        spec = _spec(name, raw)
        if spec["type"] == "int":
            step = int(spec["step"]) if spec["step"] else None
            hp.Int(name, int(spec["min"]), int(spec["max"]), step=step, sampling=spec["sampling"])
        elif spec["type"] == "float":
            low, high, step = float(spec["min"]), float(spec["max"]), spec["step"]
            if step and spec["sampling"] == "linear":
                # Keras Tuner counts int((max - min) / step) steps: 0.3..0.6 by 0.1 is 2.999... steps,
                # and 0.6 would never be tried. Nudge max past the rounding so it is.
                steps = round((high - low) / float(step))
                if abs(low + steps * float(step) - high) < 1e-9 * max(1.0, abs(high)):
                    high = low + (steps + 1e-6) * float(step)
            hp.Float(name, low, high, step=step, sampling=spec["sampling"])
        elif spec["type"] == "choice":
            hp.Choice(name, list(spec["values"]))
        else:
            hp.Boolean(name)
    return hp


def describe(space: Any) -> Dict[str, Dict[str, Any]]:
    """The space as plain data, without unset fields: for params and artifacts."""
    return {
        name: {k: v for k, v in dict(spec).items() if v is not None and not (k == "sampling" and v == "linear")}
        for name, spec in _plain(space).items()
    }
