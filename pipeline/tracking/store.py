"""Which MLflow store a job talks to, checked before any data is read.

Owns the retry policy handed to MLflow (``tracking.max_retries``, ``tracking.backoff_factor``),
the health check of a tracking server, the preflight that opens a local store (one process at
a time, so that schema migrations do not collide; MLflow's traceback of a store too full to
write left to the job's one-line error), and where to look at a run in the UI.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE, MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME

from pipeline.diskfull import full_disk
from pipeline.errors import TrackingError, first_line
from pipeline.quiet import wants_logs
from pipeline.redact import redact, scrub


def configure(tracking_cfg: Any) -> None:
    """Retry policy for a tracking server (MLflow's own retries with backoff, from the config); no
    run URL printed by MLflow when the URI has credentials in it."""
    for name, value in (("max_retries", tracking_cfg.max_retries), ("backoff_factor", tracking_cfg.backoff_factor)):
        if value is None or int(value) < 0:
            raise TrackingError(f"tracking.{name} must be 0 or more, got {value}")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(tracking_cfg.max_retries))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(int(tracking_cfg.backoff_factor))
    if "@" in urllib.parse.urlsplit(str(tracking_cfg.uri)).netloc:
        # MLflow prints each run's URL as the store's URI has it, password and all; the job prints its own, redacted
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def _server_request(uri: str, path: str) -> urllib.request.Request:
    """A GET of ``path`` on the server, authenticated as MLflow's client would be: the URI's
    ``user:password@`` (taken out of the address, which ``urllib`` would read as a host name)
    as HTTP basic auth; else ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``;
    else ``MLFLOW_TRACKING_TOKEN`` as a bearer token."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit(parts._replace(netloc=host, query="", fragment="")).rstrip("/") + path
    request = urllib.request.Request(url)
    user, password = parts.username, parts.password
    if user is None and password is None:
        user, password = MLFLOW_TRACKING_USERNAME.get(), MLFLOW_TRACKING_PASSWORD.get()
    if user or password:
        pair = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    elif MLFLOW_TRACKING_TOKEN.get():
        request.add_header("Authorization", f"Bearer {MLFLOW_TRACKING_TOKEN.get()}")
    return request


@contextlib.contextmanager
def _at_once(timeout: float) -> Iterator[None]:
    """MLflow's REST calls in this block: no retries, at most ``timeout`` s each."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(max(1, math.ceil(timeout))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_server(tracking_cfg: Any) -> bool:
    """For a tracking server (http, https): whether it answers within ``tracking.connect_timeout``
    as an MLflow tracking server does (``/health``, then one REST call of MLflow's client), else a
    one-line error. False for a local store, which :func:`preflight` opens."""
    uri = str(tracking_cfg.uri)
    if not uri.strip():
        raise TrackingError("tracking.uri is empty; give a store (sqlite:///path/mlflow.db, http://host:5000) or leave it out")
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return False
    shown = redact(uri)
    try:
        urllib.request.urlopen(_server_request(uri, "/health"), timeout=tracking_cfg.connect_timeout).close()
    except urllib.error.HTTPError as e:  # it answered: not as MLflow's server does
        if e.code >= 500:  # starting, or overloaded: as good as unreachable for now
            raise TrackingError(f"MLflow tracking server {shown} is unreachable (HTTP {e.code} {e.reason}); "
                                "start it, or set tracking.uri") from None
        if e.code in (401, 403):
            raise TrackingError(f"MLflow tracking server {shown} refused the credentials (HTTP {e.code}); "
                                "check the user and password in tracking.uri or MLFLOW_TRACKING_USERNAME/PASSWORD") from None
        raise TrackingError(f"{shown} answers, but it is not an MLflow tracking server (GET /health: HTTP {e.code} {e.reason}); "
                            "check tracking.uri") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"MLflow tracking server {shown} is unreachable ({reason}); start it, or set tracking.uri") from None
    try:
        with _at_once(float(tracking_cfg.connect_timeout)):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - whatever it answered, it is not a usable MLflow server
        if getattr(e, "error_code", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise TrackingError(f"MLflow tracking server {shown} refused the credentials; check the user and password "
                                "in tracking.uri or MLFLOW_TRACKING_USERNAME/PASSWORD") from None
        why = scrub(first_line(e))
        password = urllib.parse.urlsplit(uri).password
        if password:  # MLflow's message has the request's URL in it, credentials and all
            why = why.replace(password, "***").replace(urllib.parse.unquote(password), "***")
        raise TrackingError(f"{shown} answers, but it is not an MLflow tracking server ({why[:200]}); check tracking.uri") from None
    return True


def store_file(uri: str) -> Optional[str]:
    """The file of a SQLite store (``sqlite:///path``), as :func:`_sqlite_path` reads it; None for
    any other store (and for a URI that does not parse: this names a file in an error, never fails)."""
    if urllib.parse.urlsplit(uri).scheme != "sqlite":
        return None
    try:
        db = _sqlite_path(uri)
    except TrackingError:
        return None
    return None if db is None else str(db.resolve())


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


#: The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def _sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:`` URI, as SQLAlchemy reads it; None for an in-memory one."""
    from sqlalchemy.engine import make_url

    try:
        database = make_url(uri).database
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's parse error, one line
        raise TrackingError(f"cannot read tracking.uri {redact(uri)}: {first_line(e)}") from None
    return None if not database or database == ":memory:" else Path(database)


def _check_sqlite_path(db: Path, create: bool) -> None:
    """What MLflow would otherwise retry for minutes before failing: a directory, a special file,
    a store that is not there (for a command that only reads)."""
    if db.is_dir():
        raise TrackingError(f"tracking.uri names a directory, {db}, not a SQLite file; name the file: sqlite:///{db / 'mlflow.db'}")
    if db.exists() and not db.is_file():
        raise TrackingError(f"tracking.uri names {db}, which is not a regular file; name a SQLite file (sqlite:///path/mlflow.db)")
    if not create and (not db.exists() or db.stat().st_size == 0):
        raise TrackingError(
            f"no MLflow store at {db} (nothing was tracked there); point at one with tracking.uri=sqlite:////path/to/mlflow.db "
            "or tracking.uri=http://host:5000 (or MLFLOW_TRACKING_URI)"
        )


def _check_sqlite_file(db: Path, create: bool) -> None:
    """An existing file must be a readable (and, to write, writable) SQLite database with MLflow's
    tables, or empty: MLflow would retry a file it cannot open, and add its tables to another
    program's database."""
    import sqlite3

    if not db.exists():
        return
    try:
        with open(db, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise TrackingError(f"cannot read the MLflow store {db}: {e.strerror}") from None
    if not header:
        return
    if header != SQLITE_HEADER:
        raise TrackingError(f"{db} is not a SQLite database (tracking.uri); name an MLflow store, or a new file to create one")
    if create and not (os.access(db, os.R_OK | os.W_OK) and os.access(db.parent, os.W_OK)):
        raise TrackingError(f"cannot write the MLflow store {db} (permission denied): it and its directory must be writable")
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        raise TrackingError(f"cannot read the MLflow store {db}: {first_line(e)}") from None
    if tables and "experiments" not in tables:
        raise TrackingError(f"{db} is a SQLite database of something else, not an MLflow store (no experiments table); "
                            "name another file in tracking.uri")


def check_store(tracking_cfg: Any) -> None:
    """What :func:`preflight` checks without creating anything, cheap enough to run before anything
    heavy is imported (and before Hydra makes the job's directory: ``pipeline.validate``): a server
    answers as MLflow's; a SQLite path is a file that is SQLite or empty, not a directory, and not
    in memory; a database server answers within ``tracking.connect_timeout``."""
    if check_server(tracking_cfg):
        return
    uri = str(tracking_cfg.uri)
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "sqlite":
        db = _sqlite_path(uri)
        if db is None:  # sqlite:// or sqlite:///:memory:
            raise TrackingError(f"tracking.uri={uri} is a store in memory, gone when the command ends (and its runs with it); "
                                "name a file: sqlite:///mlruns/mlflow.db")
        _check_sqlite_path(db, create=True)
        _check_sqlite_file(db, create=True)
    else:
        _check_other_store(uri, float(tracking_cfg.connect_timeout), create=True)


def _check_other_store(uri: str, timeout: float, create: bool) -> None:
    """A store that is neither a server nor SQLite: a database server answers within ``timeout``
    s; a plain path or ``file:`` URI (MLflow 3's directory store, refused unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set, in a long paragraph) names the SQLite store to use, and a
    directory store that is not there is not made by a command that only reads."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme.split("+")[0] in DATABASE_SCHEMES:
        _check_database(uri, timeout)
    elif scheme in ("", "file") and uri.strip() not in ("databricks", "databricks-uc", "uc"):
        path = urllib.parse.urlsplit(uri).path if scheme else uri
        if not MLFLOW_ALLOW_FILE_STORE.get():
            store = path if path.endswith((".db", ".sqlite", ".sqlite3")) else f"{path.rstrip('/') or '.'}/mlflow.db"
            raise TrackingError(f"tracking.uri={uri} is a path, which MLflow 3 reads as a directory store it no longer writes; "
                                f"name a SQLite store: tracking.uri=sqlite:///{store}")
        if not create:
            from mlflow.utils.file_utils import local_file_uri_to_path

            root = Path(local_file_uri_to_path(uri))  # where MLflow's directory store would be
            # a directory store has its trash folder and its experiments' meta.yaml (a copy by git or a
            # sync may have dropped the empty .trash)
            if not ((root / ".trash").is_dir() or any(root.glob("*/meta.yaml"))):
                raise TrackingError(f"no MLflow store at {root} (nothing was tracked there); point at one with tracking.uri "
                                    "(or MLFLOW_TRACKING_URI)")


#: The database servers MLflow's SQLAlchemy store speaks to.
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


def _check_database(uri: str, timeout: float) -> None:
    """A database store's server lets the user in within ``timeout`` s: one try of MLflow's own
    engine, where MLflow retries for about 100 s with a warning of several lines per try. The
    driver connects as it is told (a Unix socket, ``?port=``, ``PGPORT``, a DSN); a try still
    running at the timeout is left to end on its own in the background."""
    import threading

    from mlflow.store.db.utils import create_sqlalchemy_engine
    from sqlalchemy import inspect

    outcome: dict = {}

    def connect() -> None:
        try:
            engine = create_sqlalchemy_engine(uri)
            try:
                inspect(engine)
            finally:
                engine.dispose()
        except Exception as e:  # noqa: BLE001 - told below, in one line
            outcome["error"] = e

    attempt = threading.Thread(target=connect, name="pipeline-store-check", daemon=True)
    attempt.start()
    attempt.join(timeout)
    if attempt.is_alive():
        raise TrackingError(f"the MLflow tracking database {redact(uri)} did not answer within {timeout:g} s "
                            "(tracking.connect_timeout); start it, or set tracking.uri")
    if "error" in outcome:  # a driver missing, the server down, credentials refused, no such database
        raise TrackingError(f"cannot use MLflow tracking store {redact(uri)}: {scrub(first_line(outcome['error']))}")


def preflight(tracking_cfg: Any, create: bool = True) -> None:
    """Fail fast, before any data is read, if the tracking store cannot be used. ``create=False``
    (commands that only read: rerun, compare, predict): a SQLite store that is not there is an
    error, and nothing is created."""
    configure(tracking_cfg)
    _quiet_full_store(store_file(str(tracking_cfg.uri)))
    if check_server(tracking_cfg):
        return
    uri = str(tracking_cfg.uri)
    scheme = urllib.parse.urlsplit(uri).scheme
    db = _sqlite_path(uri) if scheme == "sqlite" else None
    lock = None
    if db is not None:
        _check_sqlite_path(db, create)
    elif scheme != "sqlite" and not create:
        # a database server that does not answer, a path: told as a job's pass (check_store) tells them
        _check_other_store(uri, float(tracking_cfg.connect_timeout), create)
    if db is not None and create:
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
        if db is not None:
            _check_sqlite_file(db, create)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except TrackingError:
        raise
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
    import shlex

    # quoted for the shell (a path with spaces); a database's password written ***
    return f"mlflow ui --backend-store-uri {shlex.quote(redact(uri))} , then open http://127.0.0.1:5000/{fragment}"


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
