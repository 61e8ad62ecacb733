"""Reading past runs back (rerun, compare): runs as plain values, their artifacts and histories.

Owns :class:`RunRecord` and every read of a store a command makes after the fact, with a
one-line error naming the store when a run or artifact is not there; and :func:`attach`, which
adds a table and a figure to a finished run without reopening it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.errors import TrackingError, first_line
from pipeline.redact import redact


@dataclass
class RunRecord:
    """What a past run recorded, as plain values."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    tags: Dict[str, str]
    params: Dict[str, str]
    metrics: Dict[str, float]

    @property
    def parent_id(self) -> Optional[str]:
        return self.tags.get("mlflow.parentRunId")


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run.info.run_id, run.info.run_name or "", run.info.status, run.info.experiment_id,
        dict(run.data.tags), dict(run.data.params), dict(run.data.metrics),
    )


def fetch_run(uri: str, run_id: str) -> RunRecord:
    """A live run of this store, or a one-line error naming the store."""
    try:
        run = mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException:
        raise TrackingError(f"no run {run_id!r} in the MLflow store {redact(uri)} (set tracking.uri=... for another store)") from None
    except Exception as e:  # noqa: BLE001 - an unusable store, whatever the cause
        raise TrackingError(f"cannot read the MLflow store {redact(uri)}: {first_line(e)}") from None
    if run.info.lifecycle_stage != "active":
        raise TrackingError(f"run {run_id} is deleted; restore it with `mlflow runs restore --run-id {run_id}`")
    return _record(run)


def search(uri: str, experiment_ids: List[str], filter_string: str = "", order_by: Optional[List[str]] = None) -> List[RunRecord]:
    """Every live run matching ``filter_string`` in these experiments (all pages)."""
    client = mlflow.MlflowClient(uri)
    out: List[RunRecord] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, order_by=order_by, max_results=1000, page_token=token)
        out.extend(_record(run) for run in page)
        token = page.token
        if not token:
            return out


def experiment_id_by_name(uri: str, name: str) -> Optional[str]:
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    return None if experiment is None or experiment.lifecycle_stage != "active" else experiment.experiment_id


def _read_artifact(uri: str, run_id: str, artifact_path: str, read: Callable[[str], Any]) -> Any:
    """``read`` of a run's artifact, downloaded to a temporary directory; a one-line error when it
    is gone or ``read`` fails on it."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return read(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=tmp, tracking_uri=uri))
    except Exception:  # noqa: BLE001 - missing file, deleted directory, unreachable store, unreadable file alike
        raise TrackingError(f"run {run_id} has no artifact {artifact_path} (was it deleted?)") from None


def load_artifact(uri: str, run_id: str, artifact_path: str) -> Any:
    """A YAML or JSON artifact of a run, parsed; a one-line error when it is gone."""
    import yaml

    return yaml.safe_load(_read_artifact(uri, run_id, artifact_path, lambda local: Path(local).read_text(encoding="utf-8")))


def load_table(uri: str, run_id: str, artifact_path: str) -> Any:
    """A CSV artifact of a run (``log_table``'s) as a DataFrame; a one-line error when it is gone."""
    import pandas as pd

    return _read_artifact(uri, run_id, artifact_path, pd.read_csv)


def metric_history(uri: str, run_id: str, key: str) -> List[float]:
    """A metric's values in step order."""
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def attach(uri: str, run_id: str, frame: Any, table_file: str, figure: Any, figure_file: str) -> None:
    """Add a CSV table and a figure to an existing run without reopening it (its status stays)."""
    client = mlflow.MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        for obj, name in ((frame, table_file), (figure, figure_file)):
            path = Path(tmp) / Path(name).name
            if name.endswith(".csv"):
                obj.to_csv(path, index=False)
            else:
                obj.savefig(path, dpi=110)
            parent = str(Path(name).parent)
            client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)
