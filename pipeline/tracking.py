"""The only module that talks to MLflow: runs as context managers, and logging helpers.

A run is opened with :func:`tracked_run` and always closed: FINISHED on success, KILLED on
Ctrl-C, FAILED on any other exception, so no run is ever left RUNNING by this process.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.errors import TrackingError, TrackingLost, first_line

PYFUNC_MODEL_FILE = Path(__file__).resolve().parent / "pyfunc_model.py"
_MAX_PARAMS_PER_BATCH = 100


def redact(uri: str) -> str:
    """The URI without a password, for messages and tags."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


#: Environment variables whose values never reach the store (checked by name).
_SECRET_NAME = re.compile(r"passw(or)?d|secret|token|api_?key|access_?key|credential|private_?key", re.IGNORECASE)
_URI_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]+:[^\s/@]+@[^\s]+")


def scrub(value: Any) -> Any:
    """``value`` with every secret replaced by ``***``: the value of any environment variable
    named like a secret (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*API_KEY*``, ...), also
    when a config interpolated it, and the password of any URI. Dicts and lists recursively."""
    secrets = sorted({v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}, key=len, reverse=True)

    def one(item: Any) -> Any:
        if isinstance(item, dict):
            return {one(k): one(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(one(v) for v in item)
        if not isinstance(item, str):
            return item
        for secret in secrets:
            item = item.replace(secret, "***")
        return _URI_WITH_PASSWORD.sub(lambda m: redact(m.group(0)), item)

    return one(value)


_CONNECTION_FAILURES = ("Max retries exceeded", "Connection refused", "Connection broken", "Connection aborted",
                        "Connection reset", "RemoteDisconnected", "IncompleteRead", "timeout")


def is_lost(error: BaseException) -> bool:
    """Whether ``error`` is MLflow failing to reach its tracking server."""
    if isinstance(error, TrackingLost):
        return True
    text = str(error)
    return isinstance(error, MlflowException) and text.startswith("API request to") and any(s in text for s in _CONNECTION_FAILURES)


def retries_spent(error: BaseException) -> bool:
    """Whether MLflow already retried (for the configured time) before giving up; a request
    cut off mid-answer (the server died while answering) is not retried by MLflow."""
    if isinstance(error, TrackingLost):
        return error.retried
    return "Max retries exceeded" in str(error)


def lost(error: BaseException, uri: str) -> TrackingLost:
    """The one-line error for a server lost mid-run."""
    if isinstance(error, TrackingLost):
        return error
    retried = retries_spent(error)
    why = f"no answer after {os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '7')} retries" if retried else "it stopped answering"
    out = TrackingLost(
        f"lost the MLflow tracking server {redact(uri)} mid-run ({why}); "
        f"what finished is recorded and a search's state is saved: run the same command again when the server is back"
    )
    out.retried = retried
    return out


def retry_budget_s(tracking_cfg: Any) -> float:
    """About how long MLflow's retries wait in all (backoff x 1, 2, 4, ..., each at most 120 s)."""
    return float(sum(min(120, int(tracking_cfg.backoff_factor) * 2**i) for i in range(int(tracking_cfg.max_retries))))


def wait_for_server(tracking_cfg: Any) -> bool:
    """Whether the tracking server answers again within the retry budget."""
    deadline = time.monotonic() + retry_budget_s(tracking_cfg)
    while True:
        try:
            return check_server(tracking_cfg)  # False for a local store: nothing to wait for
        except TrackingError:
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)


def close_trial_runs(tracking_cfg: Any, parent_run_id: str, trial_id: str, why: str) -> None:
    """Mark KILLED a trial's live runs before it runs again: one whose answer was cut off may
    exist, RUNNING, or FINISHED if its closing write reached the server but the answer did not."""
    client = mlflow.MlflowClient(str(tracking_cfg.uri))
    parent = client.get_run(parent_run_id)
    for run in client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`tuner.trial_id` = '{trial_id}'",
    ):
        if run.info.status in ("RUNNING", "FINISHED"):
            _kill(client, run.info.run_id, why)


def _kill(client: Any, run_id: str, why: str) -> None:
    client.set_tag(run_id, "error", why)
    client.set_terminated(run_id, status="KILLED")


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


def _experiment_id(tracking_cfg: Any) -> str:
    name = scrub(str(tracking_cfg.experiment_name))
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
                f"or set tracking.experiment_name"
            )
        return experiment.experiment_id
    location = None
    if tracking_cfg.artifact_location and urllib.parse.urlsplit(str(tracking_cfg.uri)).scheme == "sqlite":
        location = (Path(tracking_cfg.artifact_location).resolve() / folder_name(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # created meanwhile by another process
        if experiment is None:
            raise
        return experiment.experiment_id


def folder_name(name: str) -> str:
    """A name made one safe folder name: an experiment called ``../../x`` or ``/Users/a/b``
    keeps its artifacts inside ``tracking.artifact_location``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@contextmanager
def tracked_run(
    tracking_cfg: Any,
    run_name: str,
    tags: Dict[str, str],
    parent_run_id: Optional[str] = None,
    run_id: Optional[str] = None,
) -> Iterator[Any]:
    """An MLflow run that is closed whatever happens inside the block.

    ``parent_run_id`` nests the run under another (also from another process, as a tuner
    worker does); ``run_id`` re-opens an existing run (a search's parent, on resume).
    A failure's first line is kept in the run's ``error`` tag.
    """
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(str(tracking_cfg.uri))
    try:
        if run_id is not None:
            active = mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
            mlflow.set_tags(scrub(tags))
        else:
            active = mlflow.start_run(
                experiment_id=_experiment_id(tracking_cfg),
                run_name=scrub(run_name),
                tags=scrub(tags),
                parent_run_id=parent_run_id,
                nested=parent_run_id is not None,
            )
        status = "FAILED"
        try:
            yield active
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as e:
            if is_lost(e):
                # KILLED if the server answers at once; else marked so when the search resumes.
                _end_quietly("KILLED")
                raise lost(e, str(tracking_cfg.uri)) from None
            mlflow.set_tag("error", scrub(f"{type(e).__name__}: {first_line(e)}")[:5000])
            raise
        finally:
            if mlflow.active_run() is not None and mlflow.active_run().info.run_id == active.info.run_id:
                try:
                    mlflow.end_run(status)
                except Exception as e:
                    if not is_lost(e):
                        raise
                    raise lost(e, str(tracking_cfg.uri)) from None
    finally:
        mlflow.set_tracking_uri(previous)


def _end_quietly(status: str) -> None:
    """Take the run off this process's stack; tell the server if it answers at once."""
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        mlflow.end_run(status)
    except Exception:  # noqa: BLE001 - the server is gone; closed when the trial reruns or the search resumes
        pass
    finally:
        if retries is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries


def run_exists(tracking_cfg: Any, run_id: str) -> bool:
    """Whether ``run_id`` is a live (not deleted) run in this store."""
    try:
        run = mlflow.MlflowClient(str(tracking_cfg.uri)).get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage == "active"


def reconcile_children(tracking_cfg: Any, parent_run_id: str, trial_statuses: Dict[str, str]) -> List[str]:
    """Make a resumed search's trial runs agree with its tuner's trials; returns those marked KILLED.

    A trial's run still RUNNING (its process died) is closed: FINISHED if the tuner had
    recorded the trial as completed, else KILLED (the trial runs again). A FINISHED run of a
    trial the tuner had not recorded as completed (killed between the two) is KILLED too, so
    every trial ends with at most one FINISHED run.
    """
    client = mlflow.MlflowClient(str(tracking_cfg.uri))
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    killed = []
    finished = set()
    for run in children:
        trial_id = run.data.tags.get("tuner.trial_id")
        if trial_id is None:  # seed-variance runs: not trials
            continue
        status = run.info.status
        if status not in ("RUNNING", "FINISHED"):
            continue
        completed = trial_statuses.get(trial_id) == "COMPLETED" and trial_id not in finished
        if status == "RUNNING" and completed:
            client.set_tag(run.info.run_id, "note", "closed on resume: its process died after the trial had completed")
            client.set_terminated(run.info.run_id, status="FINISHED")
        elif not completed:
            why = "the process running this trial died; the trial was run again"
            if status == "FINISHED":
                why = "the process died before the tuner recorded this trial; the trial was run again"
            _kill(client, run.info.run_id, why)
            killed.append(run.info.run_id)
            continue
        finished.add(trial_id)
    return killed


def close_stale_runs(tracking_cfg: Any, parent_run_id: str, tag: str, completed: Callable[[Dict[str, str]], bool]) -> None:
    """Close a resumed search's child runs tagged ``tag`` that are still RUNNING (their process
    died): FINISHED when ``completed(tags)`` says their work was kept, else KILLED."""
    client = mlflow.MlflowClient(str(tracking_cfg.uri))
    parent = client.get_run(parent_run_id)
    stale = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    for run in stale:
        if tag not in run.data.tags:
            continue
        if completed(run.data.tags):
            client.set_tag(run.info.run_id, "note", "closed on resume: its process died after its work was saved")
            client.set_terminated(run.info.run_id, status="FINISHED")
        else:
            _kill(client, run.info.run_id, "the process running this died; it was run again")


def log_params(params: Dict[str, str]) -> None:
    items = list(params.items())
    for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        mlflow.log_params(scrub(dict(items[i : i + _MAX_PARAMS_PER_BATCH])))


def log_metrics(metrics: Dict[str, float], step: Optional[int] = None) -> None:
    mlflow.log_metrics(metrics, step=step)


def set_tags(tags: Dict[str, str]) -> None:
    mlflow.set_tags(scrub(tags))


def log_dict(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(scrub(obj), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(scrub(text), artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    import matplotlib.pyplot as plt

    try:
        mlflow.log_figure(figure, artifact_file)
    finally:
        plt.close(figure)


def log_table(frame: Any, artifact_file: str) -> None:
    """A DataFrame as a CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


def epoch_logger(describe_model: bool = True) -> Any:
    """A Keras callback logging every epoch's metrics to the active run (:func:`_epoch_logger_class`)."""
    return _epoch_logger_class()(describe_model=describe_model)


@functools.lru_cache(maxsize=None)
def _epoch_logger_class() -> type:
    # mlflow.keras imports Keras and TensorFlow (seconds): not before a job needs them, so that
    # an unreachable tracking server is reported quickly.
    from mlflow.keras import MlflowCallback

    class EpochLogger(MlflowCallback):
        """MLflow's Keras callback: train and validation metrics every epoch, in one batched write.

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
            if self.describe_model:
                super().on_train_begin(logs)

        def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
            if logs:
                mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch, synchronous=True)

        def on_test_end(self, logs: Optional[Dict[str, float]] = None) -> None:
            return None

    return EpochLogger


def log_text_model(
    keras_model_path: str,
    classes: List[str],
    requirements: List[str],
    example_texts: List[str],
    registered_model_name: Optional[str] = None,
    version_tags: Optional[Dict[str, str]] = None,
) -> str:
    """Log the end-to-end raw-text model as an MLflow pyfunc; returns its model URI.

    MLflow runs the model on ``example_texts`` while logging, so a model that cannot predict
    raw text is never logged. With ``registered_model_name`` it also becomes a new version of
    that model in the Model Registry, tagged with ``version_tags``.
    """
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        label_map = Path(tmp) / "label_map.json"
        label_map.write_text(json.dumps({"classes": classes}), encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_MODEL_FILE),
            artifacts={"keras_model": keras_model_path, "label_map": str(label_map)},
            input_example=pd.DataFrame({"text": example_texts}),
            pip_requirements=requirements,
            registered_model_name=registered_model_name,
        )
    version = getattr(info, "registered_model_version", None)
    if registered_model_name and version is not None:
        client = mlflow.MlflowClient()
        for key, value in (version_tags or {}).items():
            client.set_model_version_tag(registered_model_name, str(version), key, scrub(value))
    return info.model_uri


def registered_for(uri: str, name: str, run_id: str, tags: Dict[str, str]) -> bool:
    """Whether a version of ``name`` from ``run_id`` with these tags is registered already
    (a version with no tags at all is one whose process died before tagging it)."""
    try:
        versions = mlflow.MlflowClient(uri).search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        return False
    return any(not v.tags or all(v.tags.get(k) == str(val) for k, val in tags.items()) for v in versions)


def ui_hint(tracking_cfg: Any, experiment_id: str, run_id: str) -> str:
    """Where to look at a run in the MLflow UI."""
    uri = str(tracking_cfg.uri)
    fragment = f"#/experiments/{experiment_id}/runs/{run_id}"
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        return f"open {redact(uri).rstrip('/')}/{fragment}"
    return f"mlflow ui --backend-store-uri {uri} , then open http://127.0.0.1:5000/{fragment}"


# --- reading past runs (rerun, compare) ---------------------------------------------------


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


def load_artifact(uri: str, run_id: str, artifact_path: str) -> Any:
    """A YAML or JSON artifact of a run, parsed; a one-line error when it is gone."""
    import yaml

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=tmp, tracking_uri=uri)
            text = Path(local).read_text(encoding="utf-8")
    except Exception:  # noqa: BLE001 - missing file, deleted directory, unreachable store alike
        raise TrackingError(f"run {run_id} has no artifact {artifact_path} (was it deleted?)") from None
    return yaml.safe_load(text)


def metric_history(uri: str, run_id: str, key: str) -> List[float]:
    """A metric's values in step order."""
    history = mlflow.MlflowClient(uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def attach(uri: str, run_id: str, frame: Any, table_file: str, figure: Any, figure_file: str) -> None:
    """Add a CSV table and a figure to an existing run without reopening it (its status stays)."""
    import matplotlib.pyplot as plt

    client = mlflow.MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        for obj, name in ((frame, table_file), (figure, figure_file)):
            path = Path(tmp) / Path(name).name
            if name.endswith(".csv"):
                obj.to_csv(path, index=False)
            else:
                obj.savefig(path, dpi=110)
                plt.close(obj)
            parent = str(Path(name).parent)
            client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)


def resolve_model(uri: str, ref: str) -> str:
    """A model URI from a run id, a registered model name (its latest version) or a URI."""
    import re

    if ref.startswith(("runs:/", "models:/")):
        return ref
    client = mlflow.MlflowClient(uri)
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        run = fetch_run(uri, ref)
        if not any(a.path == "model" for a in client.list_artifacts(run.run_id)) and not _logged_models(client, run):
            raise TrackingError(f"run {ref} logged no model (search trials do not; use the search's run or its registered model)")
        return f"runs:/{ref}/model"
    try:
        versions = client.search_model_versions(f"name='{ref}'")
    except Exception as e:  # noqa: BLE001 - an unusable store
        raise TrackingError(f"cannot read the MLflow model registry at {redact(uri)}: {first_line(e)}") from None
    if not versions:
        raise TrackingError(f"no registered model {ref!r} with a version in {redact(uri)} (nor a run id)")
    latest = max(versions, key=lambda v: int(v.version))
    return f"models:/{ref}/{latest.version}"


def _logged_models(client: Any, run: RunRecord) -> bool:
    """Whether MLflow 3 logged a model for this run (kept outside the run's artifact tree)."""
    try:
        return bool(client.search_logged_models(experiment_ids=[run.experiment_id], filter_string=f"source_run_id = '{run.run_id}'"))
    except Exception:  # noqa: BLE001 - older stores
        return False


def check_own_model(model_uri: str) -> None:
    """Refuse, before anything of it is loaded, a model this project did not write.

    Loading an MLflow pyfunc model runs its code, or unpickles its object: only the raw-text
    model of :func:`log_text_model` is loaded, a model from code whose one code file is exactly
    this project's ``pyfunc_model.py`` (which loads the Keras model in Keras safe mode and the
    label map as JSON).
    """
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        try:
            meta = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/MLmodel", dst_path=tmp)).read_text())
        except Exception as e:  # noqa: BLE001 - gone, unreadable, not a model
            raise TrackingError(f"cannot read model {model_uri}: {first_line(e)}") from None
        pyfunc = (meta or {}).get("flavors", {}).get("python_function", {}) if isinstance(meta, dict) else {}
        code = Path(str(pyfunc.get("model_code_path") or "")).name
        refused = f"refusing to load {model_uri}: it is not a text model written by this pipeline"
        if pyfunc.get("loader_module") != "mlflow.pyfunc.loaders.code_model" or not code.endswith(".py") or pyfunc.get("code"):
            raise TrackingError(f"{refused} (loading it would unpickle or run foreign code)")
        try:
            theirs = Path(mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/{code}", dst_path=tmp)).read_bytes()
        except Exception:  # noqa: BLE001
            raise TrackingError(f"{refused} (its code file {code} is missing)") from None
        if theirs != PYFUNC_MODEL_FILE.read_bytes():
            raise TrackingError(f"{refused} (its code differs from this version's pipeline/pyfunc_model.py)")


def load_text_model(uri: str, ref: str) -> Any:
    """The raw-text pyfunc model of a run or a registered model, if this project wrote it."""
    model_uri = resolve_model(uri, ref)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        check_own_model(model_uri)
        return mlflow.pyfunc.load_model(model_uri)
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - deleted files, a foreign model
        raise TrackingError(f"cannot load model {model_uri}: {first_line(e)}") from None
    finally:
        mlflow.set_tracking_uri(previous)
