"""Which MLflow store a job talks to, checked before any data is read.

Owns the retry policy handed to MLflow (``tracking.max_retries``, ``tracking.backoff_factor``),
the health check of a tracking server, the preflight that opens a local store (one process at
a time, so that schema migrations do not collide), and where to look at a run in the UI.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import mlflow

from pipeline.errors import TrackingError, first_line
from pipeline.tracking.redact import redact


def configure(tracking_cfg: Any) -> None:
    """Retry policy for a tracking server (MLflow's own retries with backoff, from the config)."""
    for name, value in (("max_retries", tracking_cfg.max_retries), ("backoff_factor", tracking_cfg.backoff_factor)):
        if value is None or int(value) < 0:
            raise TrackingError(f"tracking.{name} must be 0 or more, got {value}")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(tracking_cfg.max_retries))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(int(tracking_cfg.backoff_factor))


def check_server(tracking_cfg: Any) -> bool:
    """For a tracking server (http, https): whether it answers within ``tracking.connect_timeout``,
    else a one-line error. False for a local store, which :func:`preflight` opens."""
    uri = str(tracking_cfg.uri)
    if not uri.strip():
        raise TrackingError("tracking.uri is empty; give a store (sqlite:///path/mlflow.db, http://host:5000) or leave it out")
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return False
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=tracking_cfg.connect_timeout).close()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it, or set tracking.uri") from None
    return True


def preflight(tracking_cfg: Any) -> None:
    """Fail fast, before any data is read, if the tracking store cannot be used."""
    configure(tracking_cfg)
    if check_server(tracking_cfg):
        return
    uri = str(tracking_cfg.uri)
    scheme = urllib.parse.urlsplit(uri).scheme
    lock = None
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            lock = open(db.parent / f".{db.name}.init.lock", "w")  # noqa: SIM115 - closed below
        except OSError as e:
            raise TrackingError(f"cannot create the MLflow store directory {db.parent}: {e.strerror}") from None
    try:
        if lock is not None:
            # Processes starting together (sweep jobs, tuner workers) would each run MLflow's
            # schema migrations on a new store at once, and collide; one at a time they don't.
            fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any store failure means the same to the user
        raise TrackingError(f"cannot use MLflow tracking store {redact(uri)}: {first_line(e)}") from None
    finally:
        if lock is not None:
            lock.close()


#: The MLflow UI's "Model training" view (its other is "GenAI").
UI_VIEW = "machine_learning"


def ui_hint(tracking_cfg: Any, experiment_id: str, run_id: str) -> str:
    """Where to look at a run in the MLflow UI: in its "Model training" view (MLflow 3.17's UI
    opens in its GenAI view unless told, whatever the experiment's kind)."""
    uri = str(tracking_cfg.uri)
    fragment = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType={UI_VIEW}"
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        return f"open {redact(uri).rstrip('/')}/{fragment}"
    return f"mlflow ui --backend-store-uri {uri} , then open http://127.0.0.1:5000/{fragment}"


@contextlib.contextmanager
def using_store(uri: str) -> Iterator[None]:
    """MLflow's tracking URI set to ``uri`` for a block. ``mlflow.set_tracking_uri`` also exports
    ``MLFLOW_TRACKING_URI`` to the process: afterwards it is as it was (unset, or the user's), or
    the next job of a sweep in this process would compose its store from it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
