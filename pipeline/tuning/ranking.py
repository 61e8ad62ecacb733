"""Which trial a search calls best: the best score, and among equal scores the model with fewer weights.

A validation split of a few hundred texts scores in steps of a fraction of a point (213 BBC News
articles: 0.47), so two trials often score exactly the same; Keras Tuner then ranks them in the
order they ran, which says nothing about either. The simpler model is the usual choice among
models the data cannot tell apart, and here the cheaper one too: the final model is that
configuration refit with three seeds (README "How the defaults were chosen"). Mixed into every
oracle of the pipeline (``pipeline/tuning/compat.py``); ranking, the trial lines' "best", the
final model, ``seed_variance``'s top configurations and Keras Tuner's own ``get_best_*`` all read
:meth:`FewerWeightsOnTies.get_best_trials`.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Dict, List, Optional


class FewerWeightsOnTies:
    """An oracle mixin: equal scores ranked by :attr:`weights_of` (fewer first), then in run order."""

    #: A trial's values -> the weight count of its model (set by the search, which knows the data's
    #: shape: ``LSTMHyperModel.weights``). None: equal scores stay in the order the trials ran.
    weights_of: Optional[Callable[[Dict[str, Any]], int]] = None

    def get_best_trials(self, num_trials: int = 1) -> List[Any]:
        ranked = super().get_best_trials(len(self.trials))  # type: ignore[misc, attr-defined]
        done = [t for t in ranked if str(t.status) == "COMPLETED"]
        if self.weights_of is None or any(t.score is None for t in done):
            return ranked[:num_trials]
        scores = collections.Counter(float(t.score) for t in done)
        sign = -1.0 if self.objective.direction == "max" else 1.0  # type: ignore[attr-defined]
        weights = self.weights_of

        def key(trial: Any) -> tuple:
            score = float(trial.score)
            # a model is built only to break a tie
            return sign * score, weights(dict(trial.hyperparameters.values)) if scores[score] > 1 else 0

        done = sorted(done, key=key)  # stable: equal scores and weights stay in run order
        return (done + ranked[len(done):])[:num_trials]
