"""A tracking server lost mid-run, and a process killed mid-search: what is recorded stays true.

Owns telling a lost server from other failures (:func:`is_lost`), the one-line error that stops
a job (exit 75), waiting for a server to come back, and making a resumed search's child runs
agree with its tuner's trials (a trial has at most one FINISHED run; a run a dead process left
RUNNING is closed), and closing the runs of a train, compare or sweep command whose process died
with them open (:func:`close_dead_runs`: ``kill -9``, a power cut, a store too full to record the end).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import mlflow
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES
from mlflow.exceptions import MlflowException

from pipeline.errors import TrackingError, TrackingLost
from pipeline.redact import redact
from pipeline.tracking.store import check_server

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
    why = f"no answer after {MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()} retries" if retried else "it stopped answering"
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


def end_quietly(status: str) -> None:
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


def _kill(client: Any, run_id: str, why: str) -> None:
    client.set_tag(run_id, "error", why)
    client.set_terminated(run_id, status="KILLED")


def _children(client: Any, parent_run_id: str, extra: str = "", **kwargs: Any) -> List[Any]:
    parent = client.get_run(parent_run_id)
    where = f"tags.mlflow.parentRunId = '{parent_run_id}'" + (f" and {extra}" if extra else "")
    return client.search_runs([parent.info.experiment_id], filter_string=where, **kwargs)


def close_trial_runs(tracking_cfg: Any, parent_run_id: str, trial_id: str, why: str) -> None:
    """Mark KILLED a trial's live runs before it runs again: one whose answer was cut off may
    exist, RUNNING, or FINISHED if its closing write reached the server but the answer did not."""
    client = mlflow.MlflowClient(str(tracking_cfg.uri))
    for run in _children(client, parent_run_id, f"tags.`tuner.trial_id` = '{trial_id}'"):
        if run.info.status in ("RUNNING", "FINISHED"):
            _kill(client, run.info.run_id, why)


def reconcile_children(tracking_cfg: Any, parent_run_id: str, trial_statuses: Dict[str, str]) -> List[str]:
    """Make a resumed search's trial runs agree with its tuner's trials; returns those marked KILLED.

    A trial's run still RUNNING (its process died) is closed: FINISHED if the tuner had
    recorded the trial as completed, else KILLED (the trial runs again). A FINISHED run of a
    trial the tuner had not recorded as completed (killed between the two) is KILLED too, so
    every trial ends with at most one FINISHED run.
    """
    client = mlflow.MlflowClient(str(tracking_cfg.uri))
    children = _children(client, parent_run_id, order_by=["attributes.start_time DESC"], max_results=5000)
    killed = []
    finished = set()
    for run in children:
        trial_id = run.data.tags.get("tuner.trial_id")
        if trial_id is None:  # seed-variance and ensemble runs: not trials
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
    for run in _children(client, parent_run_id, "attributes.status = 'RUNNING'", max_results=5000):
        if tag not in run.data.tags:
            continue
        if completed(run.data.tags):
            client.set_tag(run.info.run_id, "note", "closed on resume: its process died after its work was saved")
            client.set_terminated(run.info.run_id, status="FINISHED")
        else:
            _kill(client, run.info.run_id, "the process running this died; it was run again")


#: The process that holds a run open, ``<machine>:<pid>:<start>``: the machine a digest of the host
#: name, the boot and the PID namespace (two containers on one host are two machines), ``start`` the
#: process's start time (a PID used again is another process).
PROCESS = "pipeline.process"


@contextlib.contextmanager
def _quiet_os() -> Any:
    with contextlib.suppress(OSError, ValueError, IndexError):
        yield


def _machine() -> str:
    parts = [socket.gethostname()]
    with _quiet_os():
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with _quiet_os():
        parts.append(os.readlink("/proc/self/ns/pid"))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _started(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux); "" where that cannot be read."""
    with _quiet_os():
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]  # field 22; the command before it may hold spaces
    return ""


def process_tag() -> Dict[str, str]:
    """The :data:`PROCESS` tag of this process, for the runs it opens and must close itself."""
    return {PROCESS: f"{_machine()}:{os.getpid()}:{_started(os.getpid())}"}


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, another user's
        pass
    now = _started(pid)
    return not (now and started and now != started)


def close_dead_runs(client: Any, experiment_id: str) -> List[str]:
    """Mark KILLED the runs of ``experiment_id`` left RUNNING by a process of this machine that is
    gone; returns their ids. Runs of another machine are left alone: their process cannot be seen.
    Best effort: a store that cannot answer is told by the run being opened, not here."""
    closed: List[str] = []
    try:
        runs = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`{PROCESS}` LIKE '{_machine()}:%'",
                                  max_results=1000)
        for run in runs:
            _, pid, started = run.data.tags[PROCESS].split(":")
            if not _alive(int(pid), started):
                _kill(client, run.info.run_id, f"its process (pid {pid}) ended without closing it; closed by a later run")
                closed.append(run.info.run_id)
    except Exception:  # noqa: BLE001 - see above
        pass
    return closed
