"""Keras Tuner, one module per concern.

- ``project``: a search's state on disk, and whether a command may continue it.
- ``compat``: every Keras Tuner workaround (the only module touching Keras Tuner's internals).
- ``tuners``: ``tuner.name`` -> a checked, built Keras Tuner over the pipeline's oracle.
- ``hypermodel``: a trial's values -> a model and its training.
- ``trials``: each trial an MLflow child run; the search's ranking.
- ``progress``: a line on stdout as each trial starts and ends.
- ``folds``: trials scored over stratified folds.
- ``prune``: the median stopping rule (``tuner.prune``).
- ``final``: after the search: seed variance and the final model (ensemble).
- ``distributed``: a chief serving the oracle, and its workers.
"""
