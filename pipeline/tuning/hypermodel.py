"""The HyperModel: a trial's values turned into a model and its training, over data prepared once.

Owns :class:`LSTMHyperModel` (``build(hp)`` and ``fit(hp, model)``, Keras Tuner's narrow
contract: the trial's values, named by config path, are written into a copy of the config, which
builds and trains as a train job's would) and :func:`searched_values`, a trial's values without Keras Tuner's own ``tuner/*``
entries. A new model family goes in ``pipeline/model.py``; nothing here needs to change for it.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import keras_tuner
from omegaconf import DictConfig

from pipeline import experiment
from pipeline.model import build_model
from pipeline.search_space import with_values


def searched_values(trial: Any) -> Dict[str, Any]:
    """A trial's values of the searched settings (without Keras Tuner's own ``tuner/*`` entries)."""
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


class LSTMHyperModel(keras_tuner.HyperModel):
    """build(hp) and fit(hp, model) over data prepared once for the whole search."""

    def __init__(self, cfg: DictConfig, prepared: experiment.Prepared) -> None:
        super().__init__(name=str(cfg.model.name))
        self.cfg = cfg
        self.prepared = prepared
        self._weights: Dict[str, int] = {}

    def build(self, hp: keras_tuner.HyperParameters) -> Any:
        return self.build_on(hp, self.prepared)

    def build_on(self, hp: keras_tuner.HyperParameters, prepared: experiment.Prepared) -> Any:
        """The model for ``hp`` as it is trained on ``prepared`` (a fold's data: its embedding's LSA
        vectors are the fold's training texts')."""
        cfg = with_values(self.cfg, hp.values)
        return build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))

    def weights(self, values: Dict[str, Any]) -> int:
        """The weight count of the model a trial's ``values`` build (what the search's ranking breaks
        ties on: ``pipeline/tuning/ranking.py``), built without its starting vectors, once per values."""
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}  # Hyperband's rounds: the same model
        key = json.dumps(values, sort_keys=True, default=str)
        if key not in self._weights:
            self._weights[key] = int(build_model(with_values(self.cfg, values), self.prepared.shape).count_params())
        return self._weights[key]

    def fit(self, hp: keras_tuner.HyperParameters, model: Any, *args: Any, **kwargs: Any) -> Any:
        return experiment.fit(
            model,
            self.prepared,
            with_values(self.cfg, hp.values).training,
            self.cfg.seed,
            callbacks=kwargs.get("callbacks"),
            epochs=kwargs.get("epochs"),  # Hyperband sets epochs per round
            initial_epoch=kwargs.get("initial_epoch", 0),
        )
