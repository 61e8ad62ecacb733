"""Which trial a search calls best: the best score, and among equal scores the model with fewer weights.

A validation split of a few hundred texts scores in steps of a fraction of a point (213 BBC News
articles: 0.47), so two trials often score exactly the same; Keras Tuner then ranks them in the
order they ran, which says nothing about either. The simpler model is the usual choice among
models the data cannot tell apart, and here the cheaper one too: the final model is that
configuration refit with three seeds (README "How the defaults were chosen"). Mixed into every
oracle of the pipeline (``pipeline/tuning/compat.py``); ranking, the trial lines' "best", the
final model, ``seed_variance``'s top configurations and Keras Tuner's own ``get_best_*`` all read
:meth:`FewerWeightsOnTies.get_best_trials`. Not Hyperband's promotion from one round to the next,
which Keras Tuner sorts by score alone (equal scores there go on in the order they ran). A search
keeps the rule it started with (``pipeline/tune.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional


class FewerWeightsOnTies:
    """An oracle mixin: equal scores ranked by :attr:`weights_of` (fewer first), then in run order."""

    #: A trial's values -> the weight count of its model (set by the search, which knows the data's
    #: shape: ``LSTMHyperModel.weights``). None: equal scores stay in the order the trials ran.
    weights_of: Optional[Callable[[Dict[str, Any]], int]] = None

    def get_best_trials(self, num_trials: int = 1) -> List[Any]:
        # Keras Tuner's ranking: completed trials by score, equal scores in the order they ran, then the rest
        ranked = super().get_best_trials(len(self.trials))  # type: ignore[misc, attr-defined]
        if self.weights_of is None:
            return ranked[:num_trials]
        done = sum(1 for t in ranked if str(t.status) == "COMPLETED")
        out = list(ranked)
        start = 0
        while start < min(done, num_trials):  # a model is built only for a tie that reaches the top num_trials
            end = start + 1
            while end < done and ranked[start].score is not None and ranked[end].score == ranked[start].score:
                end += 1
            if end - start > 1:
                out[start:end] = sorted(ranked[start:end], key=lambda t: self.weights_of(dict(t.hyperparameters.values)))  # type: ignore[misc]
            start = end
        return out[:num_trials]
