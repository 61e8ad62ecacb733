"""Which MLflow store a job talks to, checked before any data is read.

Owns the retry policy handed to MLflow (``tracking.max_retries``, ``tracking.backoff_factor``),
the health check of a tracking server, the preflight that opens a local store (one process at
a time, so that schema migrations do not collide; MLflow's traceback of a store too full to
write left to the job's one-line error), and where to look at a run in the UI.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow

from pipeline.diskfull import full_disk
from pipeline.errors import TrackingError, first_line
from pipeline.quiet import wants_logs
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


def store_file(uri: str) -> Optional[str]:
    """The file of a SQLite store (``sqlite:///path``); None for any other store."""
    if urllib.parse.urlsplit(uri).scheme != "sqlite":
        return None
    return str(Path(uri[len("sqlite:///") :]).resolve())


class _FullStoreTold(logging.Filter):
    """Drops MLflow's traceback of a SQLite store that could not be written for want of space:
    the job says it in its one ``error:`` line (``--verbose`` keeps it)."""

    def __init__(self, store: Optional[str]) -> None:
        super().__init__()
        self.store = store

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or full_disk(error, store=self.store) is None


def _quiet_full_store(store: Optional[str]) -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    for old in [f for f in logger.filters if isinstance(f, _FullStoreTold)]:
        logger.removeFilter(old)
    if not wants_logs(os.environ):
        logger.addFilter(_FullStoreTold(store))


def preflight(tracking_cfg: Any) -> None:
    """Fail fast, before any data is read, if the tracking store cannot be used."""
    configure(tracking_cfg)
    _quiet_full_store(store_file(str(tracking_cfg.uri)))
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
