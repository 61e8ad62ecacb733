"""Cross-validated trial scores: ``tuner.cv_folds=K`` scores a trial over K stratified folds.

With a validation split of a few hundred texts the standard error of an accuracy is one to two
points, more than the differences between a search's trials: the search then picks its winner
by noise. With folds, a trial is trained K times, each time on K-1 folds of train+validation and
validated on the remaining one; the trial's curve is the mean over folds of each epoch's metrics
(a fold stopped early keeps its last value for the later epochs), so its score and best epoch
are those of the mean curve, and that is what the ranking, Hyperband and the Bayesian oracle see.
The spread over folds at that epoch is logged beside it (``trial_score_std``).

Each fold's per-epoch metrics go on the trial's run as ``fold<k>.<metric>`` (``fold0.val_accuracy``),
so the MLflow UI charts them beside the mean. Each finished fold's history is kept in the tuner
project (``folds/trial<id>/fold<k>.json``, written whole, with a digest of the rows it validated
on): a search killed mid-trial resumes with the folds it had finished, and trains only the rest. A
file whose fold was drawn otherwise (a project from before the folds followed ``dataset.split_seed``,
or one written by hand) is not read back: that fold is trained again.

The vocabulary is the one adapted on the training split (the folds' validation texts from it
were part of that adaptation: which words exist, never their labels). A trial scored on folds
has no single model; the final model is the best configuration refit on train+validation. Nor
is it stopped early by ``tuner.prune``: its curve exists only once its last fold has trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig

from pipeline import experiment, tracking
from pipeline.data import split_seed
from pipeline.limits import fold_count


def resolve(cfg: DictConfig, prepared: experiment.Prepared) -> int:
    """The number of folds ``tuner.cv_folds`` asks for on this data (1: no folds), checked
    (:func:`pipeline.limits.fold_count`, which the settings' pass runs on the same splits first)."""
    labels = np.concatenate([prepared.encoded["train"][1], prepared.encoded["val"][1]])
    return fold_count(cfg, labels, prepared.splits.classes)


def splits(prepared: experiment.Prepared, folds: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of train+validation for each fold: stratified, seeded."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.concatenate([prepared.encoded["train"][1], prepared.encoded["val"][1]])
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def search_splits(cfg: DictConfig, prepared: experiment.Prepared, folds: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A search's folds. They divide the labelled texts as the split does (``dataset.split_seed``,
    else ``seed``): with the split seed fixed, a search's ``seed`` varies its training only, and
    every seed's trials are scored on the same folds."""
    return splits(prepared, folds, split_seed(cfg.dataset, int(cfg.seed)))


def fold_data(prepared: experiment.Prepared, train_rows: np.ndarray, val_rows: np.ndarray) -> experiment.Prepared:
    """``prepared`` with one fold's training and validation rows as its train and val splits (a
    distilled fit's teacher is fit on the fold's training rows: ``Prepared.fit_texts``)."""
    ids = np.concatenate([prepared.encoded["train"][0], prepared.encoded["val"][0]])
    labels = np.concatenate([prepared.encoded["train"][1], prepared.encoded["val"][1]])
    encoded = {"train": (ids[train_rows], labels[train_rows]), "val": (ids[val_rows], labels[val_rows]),
               "test": prepared.encoded["test"]}
    return dataclasses.replace(prepared, encoded=encoded, fold_rows=np.asarray(train_rows))


def mean_curve(histories: List[Dict[str, List[float]]]) -> Dict[str, List[float]]:
    """Each metric's per-epoch mean over folds; a fold stopped early keeps its last value."""
    epochs = max(len(h.get("loss", [])) for h in histories)
    out: Dict[str, List[float]] = {}
    for key in histories[0]:
        padded = [list(h[key]) + [h[key][-1]] * (epochs - len(h[key])) for h in histories if h.get(key)]
        out[key] = [float(v) for v in np.mean(np.array(padded, dtype="float64"), axis=0)]
    return out


def spread_at_best(histories: List[Dict[str, List[float]]], curve: Dict[str, List[float]], objective: str, direction: str) -> float:
    """The standard deviation over folds of the objective at the mean curve's best epoch."""
    values = curve.get(objective, [])
    if not values or len(histories) < 2:
        return 0.0
    best = int(np.argmax(values) if direction == "max" else np.argmin(values))
    at = [h[objective][min(best, len(h[objective]) - 1)] for h in histories if h.get(objective)]
    return float(np.std(at, ddof=1)) if len(at) > 1 else 0.0


def _write_whole(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)


def rows_digest(rows: np.ndarray) -> str:
    """A digest of a fold's validation rows: which texts it held out, in the order drawn."""
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()[:16]


def finished_fold(path: Path, val_rows: np.ndarray) -> Optional[Dict[str, List[float]]]:
    """The history of a fold finished before, or None: no file, or a file of other validation rows."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record["history"] if record.get("val_rows") == rows_digest(val_rows) else None


def cross_validate(
    hypermodel: Any, trial: Any, cfg: DictConfig, prepared: experiment.Prepared, folder: Path, folds: int, epochs: int, log: bool
) -> Tuple[Dict[str, List[float]], float]:
    """Train ``trial``'s configuration on each fold; returns the mean curve and the spread over
    folds of the objective at its best epoch. Finished folds are read back from ``folder``."""
    import keras

    from pipeline.search_space import with_values

    training = with_values(cfg, trial.hyperparameters.values).training
    histories: List[Dict[str, List[float]]] = []
    for k, (train_rows, val_rows) in enumerate(search_splits(cfg, prepared, folds)):
        path = folder / f"trial{trial.trial_id}" / f"fold{k}.json"
        history = finished_fold(path, val_rows)
        if history is None:
            keras.backend.clear_session()
            keras.utils.set_random_seed(int(cfg.seed) + k)
            fold = fold_data(prepared, train_rows, val_rows)
            model = hypermodel.build_on(trial.hyperparameters, fold)
            fitted = experiment.fit(model, fold, training, int(cfg.seed) + k, epochs=epochs)
            history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
            _write_whole(path, {"fold": k, "folds": folds, "val_rows": rows_digest(val_rows), "history": history})
        if log:
            tracking.log_metric_history({f"fold{k}.{key}": values for key, values in history.items()})
        histories.append(history)
    curve = mean_curve(histories)
    return curve, spread_at_best(histories, curve, str(cfg.tuner.objective), str(cfg.tuner.direction))
