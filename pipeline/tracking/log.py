"""Writing into the active run: params, metrics, tags, artifacts and every epoch's metrics.

Owns the helpers every job logs through, each scrubbing secrets first (names, params, tags, metric
keys, config and record artifacts, tables), except :func:`log_data`, which writes data as it is (a
vocabulary, labels, texts: what the model itself holds), and each naming the artifact a full disk
would not let be written; and the Keras callback that logs a model's per-epoch metrics and its
description (:func:`epoch_logger`), through the same helpers. A new metric or artifact a job
records goes through here.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import mlflow
import mlflow.data

from pipeline.diskfull import full_disk, writing
from pipeline.redact import scrub, scrub_text, secrets_from_environment
from pipeline.tracking.store import store_file

_MAX_PARAMS_PER_BATCH = 100


def log_params(params: Dict[str, str]) -> None:
    items = list(params.items())
    for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        mlflow.log_params(scrub(dict(items[i : i + _MAX_PARAMS_PER_BATCH])))


def log_metrics(metrics: Dict[str, float], step: Optional[int] = None, synchronous: Optional[bool] = None) -> None:
    """``metrics`` into the active run; per epoch with ``step``. Without one, a value the run holds
    already is not written again: a resumed search's parent logs its summaries (the baseline's, the
    best score, the test metrics) again as it goes over its steps, and each write would be one
    more point on the same chart."""
    named = {scrub(k): v for k, v in metrics.items()}
    if step is None and named:
        run = mlflow.active_run()
        held = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics if run is not None else {}
        named = {k: v for k, v in named.items() if not _same(held.get(k), v)}
        if not named:
            return
    mlflow.log_metrics(named, step=step, synchronous=synchronous)


def _same(held: Optional[float], value: Any) -> bool:
    """Whether a run's last value of a metric is ``value`` (NaN as NaN)."""
    if held is None:
        return False
    value = float(value)
    return held == value or (math.isnan(held) and math.isnan(value))


def log_metric_history(history: Dict[str, List[float]]) -> None:
    """Whole per-epoch curves (``{"fold0.val_accuracy": [...]}``) into the active run, step = epoch,
    in one write."""
    from mlflow.entities import Metric

    run = mlflow.active_run()
    now = int(time.time() * 1000)
    metrics = [Metric(scrub(key), float(v), now, step) for key, values in history.items() for step, v in enumerate(values)]
    for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[i : i + 1000])


def set_tags(tags: Dict[str, str]) -> None:
    mlflow.set_tags(scrub(tags))


#: What each split is to MLflow's dataset inputs (the UI's Dataset column).
DATASET_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


def log_datasets(name: str, source: Optional[str], splits: Dict[str, Tuple[List[str], List[str], str]]) -> None:
    """The splits as MLflow dataset inputs of the active run, ``{split: (texts, labels, digest)}``:
    named ``<name>-<split>``, with the pipeline's own fingerprint as the digest, in the contexts
    ``train``, ``validation`` and ``test``."""
    import pandas as pd
    from mlflow.data.sources import LocalArtifactDatasetSource

    # the file the splits were read from, as MLflow's local source: given as a path string, MLflow
    # resolves it by two registered classes of that name and warns that it is ambiguous (mlflow#9702)
    origin = LocalArtifactDatasetSource(scrub(source)) if source else None
    for split, (texts, labels, digest) in splits.items():
        frame = pd.DataFrame({"text": texts, "label": labels})
        dataset = mlflow.data.from_pandas(frame, source=origin, targets="label", name=scrub(f"{name}-{split}"), digest=digest)
        mlflow.log_input(dataset, context=DATASET_CONTEXTS.get(split, split))


def _artifact(artifact_file: str) -> Any:
    """A block that writes ``artifact_file`` into the active run: a full disk names it."""
    active = mlflow.active_run()
    run = f" of MLflow run {active.info.run_id}" if active is not None else ""
    return writing(f"the artifact {artifact_file}{run}", store=store_file(mlflow.get_tracking_uri()))


def log_dict(obj: Any, artifact_file: str) -> None:
    with _artifact(artifact_file):
        mlflow.log_dict(scrub(obj), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    with _artifact(artifact_file):
        mlflow.log_text(scrub(text), artifact_file)


def log_data(obj: Any, artifact_file: str) -> None:
    """Data as it is, not scrubbed: a text (``str``), a dict or list (JSON/YAML by extension) or a
    DataFrame (CSV). For what the data and the model hold anyway (a vocabulary, the labels, test
    texts): scrubbing a vocabulary token that equals a secret would only make the artifact
    disagree with the model, whose vocabulary has that token."""
    if isinstance(obj, str):
        with _artifact(artifact_file):
            mlflow.log_text(obj, artifact_file)
    elif isinstance(obj, (dict, list)):
        with _artifact(artifact_file):
            mlflow.log_dict(obj, artifact_file)
    else:
        _log_csv(obj, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    """A figure (``matplotlib.figure.Figure``, made without pyplot: nothing to close) as an artifact."""
    with _artifact(artifact_file):
        mlflow.log_figure(figure, artifact_file)


def log_table(frame: Any, artifact_file: str) -> None:
    """A DataFrame as a CSV artifact, its text cells and column names scrubbed (numbers as they are)."""
    secrets = secrets_from_environment()

    def text(value: Any) -> Any:
        return scrub_text(value, secrets) if isinstance(value, str) else value

    _log_csv(frame.rename(columns=lambda c: text(str(c))).map(text), artifact_file)


def _log_csv(frame: Any, artifact_file: str) -> None:
    with _artifact(artifact_file), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


def log_skops(obj: Any, artifact_file: str) -> None:
    """A scikit-learn object as a skops file (loadable without unpickling arbitrary code); a fitted
    model is data, as :func:`log_data` (its vocabulary is the training texts'). Deflated at level 1:
    skops writes its state as indented JSON, a dict entry by entry (the baseline's vocabularies go
    as arrays instead: :func:`pipeline.baseline.stored`), and its arrays as ``.npy`` files."""
    import zipfile

    import skops.io

    with _artifact(artifact_file), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        skops.io.dump(obj, path, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


def raise_stopped(callbacks: List[Any]) -> None:
    """After ``fit``: the full store that stopped an :func:`epoch_logger` among ``callbacks``, raised."""
    for callback in callbacks:
        stopped_by = getattr(callback, "stopped_by", None)
        if stopped_by is not None:
            raise stopped_by


def epoch_logger(describe_model: bool = True) -> Any:
    """A Keras callback logging every epoch's metrics to the active run (:func:`_epoch_logger_class`)."""
    return _epoch_logger_class()(describe_model=describe_model)


@functools.lru_cache(maxsize=None)
def _epoch_logger_class() -> type:
    # mlflow.keras imports Keras and TensorFlow (seconds): not before a job needs them, so that
    # an unreachable tracking server is reported quickly.
    from mlflow.keras import MlflowCallback

    class EpochLogger(MlflowCallback):
        """MLflow's Keras callback: train and validation metrics every epoch, in one batched write,
        through this module's helpers (scrubbed, as everything written).

        Written synchronously: MLflow's asynchronous queue, the callback's default, held every
        run's end for about a second while its thread wound down, a quarter of a short trial's
        time (bench/search_cost.py); one write per epoch to SQLite takes milliseconds.

        With ``describe_model`` it also logs the model summary and optimizer settings when training
        starts (train runs); a search's trials skip them, their values are the trial's params.
        Its ``on_test_end`` would also log unstepped ``validation_*`` copies of every evaluation;
        the ``val_*`` metrics of each epoch already hold them.
        """

        def __init__(self, describe_model: bool = True) -> None:
            super().__init__()
            self.describe_model = describe_model

        def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
            # what MLflow's own on_train_begin logs (optimizer params, model_summary.txt), scrubbed:
            # the model's name is the config's model.name, which may interpolate a secret
            if not self.describe_model:
                return
            log_params({f"optimizer_{k}": v for k, v in self.model.optimizer.get_config().items()})
            lines: List[str] = []
            self.model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
            log_text("\n".join(lines), "model_summary.txt")

        def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
            if logs:
                try:
                    log_metrics({k: float(v) for k, v in logs.items()}, step=epoch, synchronous=True)
                except Exception as e:
                    # MLflow's callbacks turn any error into a warning and train on without the
                    # epoch; a full store stops training instead, and fit raises it (raise_stopped)
                    if full_disk(e, store=store_file(mlflow.get_tracking_uri())) is None:
                        raise
                    self.stopped_by = e
                    self.model.stop_training = True

        def on_test_end(self, logs: Optional[Dict[str, float]] = None) -> None:
            return None

    return EpochLogger
