"""Every workaround for Keras Tuner, in one place: the only module that touches ``keras_tuner.src``.

Each is applied by construction, never by patching Keras Tuner at import: the search's oracle is
one of this module's Oracle subclasses (Keras Tuner's documented extension point, handed to the
tuner as ``oracle=``), and its tuner class comes from :func:`tuner_class`. Checked against
keras-tuner 1.4.8 (:data:`CHECKED_AGAINST`); ``tests/test_keras_tuner_compat.py`` fails when a
future Keras Tuner no longer needs one of them, or no longer calls the method it replaces.

- **Whole state files** (:func:`write_json`): Keras Tuner rewrites ``oracle.json``, each
  ``trial.json`` and the tuner's file in place; a process killed mid-write left a truncated
  file that no later run could reload. Written beside and renamed instead; a write that fails
  (a full disk) leaves the old file as it was and nothing beside it.
- **Uncorrelated random draws** (:meth:`PipelineOracle._random_values`): Keras Tuner draws each
  value from ``random.Random(seed_state)`` with ``seed_state`` + 1 per value, so with four searched
  values one of them is drawn from seeds 4 apart, whose first Mersenne Twister outputs are far
  from independent (from seed 42 the SST-2 space drew ``embedding_dim=128`` in all of the first 12
  trials). The same state and order, hashed first.
- **Values as written** (:meth:`PipelineOracle.populate_space`): a float range with a step is drawn
  as ``min + k * step``, so 0.1 to 0.3 by 0.1 draws ``0.30000000000000004``, which every trial
  line, ``hp.*`` param, tag, table and trial config then shows. Each float value is kept to 12
  significant digits (``0.3``): float32 training, and a float32 model, see the same number.
- **State that agrees after a crash** (:func:`reconcile`, on every reload): Keras Tuner writes a
  trial's file, then the oracle's; a kill between the two leaves a trial RUNNING but queued
  nowhere (never run again), or COMPLETED but queued to run again. And it reloads trials in the
  file system's order and ranks equal scores in that order: put back in the order they ran.
- **A chief that stops** (:func:`serve_oracle`, :func:`oracle_finished`): Keras Tuner's own chief
  loop never stops its gRPC server, so a chief process never exits; the pipeline serves the
  oracle with Keras Tuner's servicer and stops when every worker was told to stop.
- **No configuration twice** (:meth:`BayesianOptimizationOracle.populate_space`): Keras Tuner's
  Bayesian oracle proposes the optimum of its Gaussian process's acquisition without looking at
  what ran, and over a search space of steps and choices that optimum is soon a configuration
  already trained: a search of BBC News (``+debug=fast tuner=bayesian``) ran its trial 3's
  configuration four more times, each to the same score (a trial trains with the search's seed,
  so a repeat is the same fit: minutes spent for nothing).
  A proposal already tried becomes a random configuration not tried yet.
- **Hyperband with a given oracle** (:class:`Hyperband`): Keras Tuner's ``Hyperband`` builds its
  own oracle; this one takes the pipeline's, keeping Hyperband's trial logic.
- **No line of its own on a resume** (:class:`_TunerFile`): Keras Tuner prints ``Reloading Tuner
  from <file>`` on stdout as it reloads a project, where a researcher's scripts read the search's
  own lines; the pipeline says ``resuming search <project> (parent run ...)`` itself. Anything
  else printed while the tuner is made passes as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from typing import Any, Dict, Optional, Tuple

import keras_tuner
from keras_tuner.src.engine.trial import TrialStatus

from pipeline.diskfull import writing
from pipeline.tuning.ranking import FewerWeightsOnTies

#: The Keras Tuner release every workaround here was checked against.
CHECKED_AGAINST = "1.4.8"


def write_json(path: Any, obj: Any) -> str:
    """``obj`` as JSON at ``path``, written beside and renamed into place: whole or not at all."""
    text = json.dumps(obj)
    path = str(path)
    if "://" in path:  # a remote filesystem (gs://...): Keras Tuner's own write
        from keras_tuner.src import utils

        return utils.save_json(path, obj)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with writing(path), open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk, a kill: the old file stays as it was, and nothing beside it
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)
    return text


def _mixed_seed(seed_state: int) -> int:
    return int.from_bytes(hashlib.sha256(str(seed_state).encode()).digest()[:8], "big")


def reconcile(oracle: Any) -> None:
    """Make a reloaded oracle agree with its trials' files (see the module's docstring)."""
    oracle.trials = dict(sorted(oracle.trials.items(), key=lambda item: (len(item[0]), item[0])))
    queued = list(oracle._retry_queue)
    changed = False
    for trial_id, trial in oracle.trials.items():
        if trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED) and trial_id in queued:
            oracle._retry_queue = [t for t in oracle._retry_queue if t != trial_id]
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)
            changed = True
        elif trial.status == TrialStatus.RUNNING and trial_id not in queued:
            oracle._retry_queue.append(trial_id)
            changed = True
    if changed:
        oracle.save()


def tidy(value: Any) -> Any:
    """A float to 12 significant digits (``0.30000000000000004`` -> ``0.3``); anything else as it is.
    Finer than float32's about 7, so the model trains on the same float32 number."""
    return float(f"{value:.12g}") if isinstance(value, float) else value


class PipelineOracle:
    """Mixed into each Keras Tuner oracle: whole state files, uncorrelated draws, values as written,
    reconciled reloads."""

    def save(self) -> None:
        write_json(self._get_oracle_fname(), self.get_state())  # type: ignore[attr-defined]

    def _save_trial(self, trial: Any) -> None:
        write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())  # type: ignore[attr-defined]

    def reload(self) -> None:
        super().reload()  # type: ignore[misc]
        reconcile(self)

    def populate_space(self, trial_id: str) -> Dict[str, Any]:
        """The oracle's own values for a new trial, each float to 12 significant digits."""
        response = super().populate_space(trial_id)  # type: ignore[misc]
        if response.get("values"):
            response["values"] = {k: tidy(v) for k, v in response["values"].items()}
        return response

    def _random_values(self) -> Optional[Dict[str, Any]]:
        """Keras Tuner's ``Oracle._random_values``, with each value's seed hashed first."""
        collisions = 0
        while True:
            hps = keras_tuner.HyperParameters()
            for hp in self.hyperparameters.space:  # type: ignore[attr-defined]
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = hp.random_sample(_mixed_seed(self._seed_state))  # type: ignore[attr-defined]
                    self._seed_state += 1  # type: ignore[attr-defined]
            if not self._duplicate(hps.values):  # type: ignore[attr-defined]
                return hps.values
            collisions += 1
            if collisions > self._max_collisions:  # type: ignore[attr-defined]
                return None


# Each also ranks equal scores by the weight count of their models (pipeline/tuning/ranking.py:
# a choice of the pipeline's, not a workaround).
class RandomSearchOracle(FewerWeightsOnTies, PipelineOracle, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOptimizationOracle(FewerWeightsOnTies, PipelineOracle, keras_tuner.oracles.BayesianOptimizationOracle):
    def populate_space(self, trial_id: str) -> Dict[str, Any]:
        """Keras Tuner's Gaussian-process proposal, or, where it names a configuration already tried
        (or running), a random one not tried yet (Keras Tuner's own draw, as before its first
        proposals); STOPPED when that draw finds none, as a random search stops (more than 20 tried
        configurations in a row: Keras Tuner's limit). The Gaussian process's fit on a few trials warns
        when a length scale ends at its bound (scikit-learn's ``ConvergenceWarning``): expected
        there, and nothing a user can act on, so not shown."""
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            response = super().populate_space(trial_id)
        if response.get("status") == TrialStatus.RUNNING and response.get("values") and self._duplicate(response["values"]):
            response = self._random_populate_space()
        return response


class HyperbandOracle(FewerWeightsOnTies, PipelineOracle, keras_tuner.oracles.HyperbandOracle):
    pass


#: tuner.name -> the oracle a search of that kind uses.
ORACLES = {"random": RandomSearchOracle, "bayesian": BayesianOptimizationOracle, "hyperband": HyperbandOracle}


class Hyperband(keras_tuner.Hyperband):
    """Keras Tuner's Hyperband tuner (epochs per bracket, weights carried between rounds) over a given oracle."""

    def __init__(self, oracle: Any, hypermodel: Any = None, **kwargs: Any) -> None:
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)


#: What Keras Tuner prints as it reloads a project (``BaseTuner.__init__``).
RELOAD_LINE = "Reloading Tuner from "


@contextlib.contextmanager
def _without_reload_line() -> Any:
    """What is printed on stdout meanwhile, less Keras Tuner's reload line, written when it ends."""
    import io
    import sys

    held = io.StringIO()
    try:
        with contextlib.redirect_stdout(held):
            yield
    finally:
        kept = "".join(line for line in held.getvalue().splitlines(keepends=True) if not line.startswith(RELOAD_LINE))
        if kept:
            sys.stdout.write(kept)


class _TunerFile:
    """The tuner's own state file written whole, as the oracle's is; reloaded without Keras
    Tuner's line on stdout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with _without_reload_line():
            super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def save(self) -> None:
        if not self._is_worker():  # type: ignore[attr-defined]
            self.oracle.save()  # type: ignore[attr-defined]
        write_json(self._get_tuner_fname(), self.get_state())  # type: ignore[attr-defined]


def tuner_class(name: str) -> type:
    """The Keras Tuner class that runs a ``name`` search over one of :data:`ORACLES`."""
    base = Hyperband if name == "hyperband" else keras_tuner.Tuner
    return type(f"{base.__name__}Tuner", (_TunerFile, base), {})


def serve_oracle(oracle: Any, host: str, port: int) -> Tuple[Any, Any]:
    """Keras Tuner's oracle service on ``host:port`` over gRPC, started; returns (server, servicer)."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server, servicer


def oracle_finished(servicer: Any, oracle: Any) -> bool:
    """Whether the search is over and every worker was told so (Keras Tuner's own test, which its chief loop never acts on)."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    return bool(servicer.stop_triggered and exit_chief(oracle))
