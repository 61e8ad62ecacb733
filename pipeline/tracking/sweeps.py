"""A Hydra sweep in MLflow: one parent run per sweep, each job a child, finished jobs found again.

A sweep is known by its identity (the command and its sweep overrides, the experiment): running
the same ``pipeline train -m ...`` again reopens the same parent, and a job whose child run
FINISHED with the same config hash and data fingerprint is not trained again.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import mlflow
from mlflow.entities import Param

from pipeline.tracking.records import RunRecord, fetch_run, search
from pipeline.redact import scrub
from pipeline.tracking.runs import _experiment_id
from pipeline.tracking.store import using_store

#: The tag that names a sweep's parent run.
SWEEP_ID = "sweep.id"


def open_sweep(tracking_cfg: Any, sweep_id: str, run_name: str, params: Dict[str, str], tags: Dict[str, str]) -> str:
    """The sweep's parent run (RUNNING): the one this sweep had, or a new one; returns its id."""
    uri = str(tracking_cfg.uri)
    with using_store(uri):
        experiment_id = _experiment_id(tracking_cfg)
    client = mlflow.MlflowClient(uri)
    found = search(uri, [experiment_id], f"tags.`{SWEEP_ID}` = '{sweep_id}'", order_by=["attributes.start_time DESC"])
    if found:
        run_id, logged = found[0].run_id, found[0].params
        client.update_run(run_id, status="RUNNING")
        for key, value in scrub({**tags, "sweep.resumed": str(int(found[0].tags.get("sweep.resumed", "0")) + 1)}).items():
            client.set_tag(run_id, key, value)
    else:
        run_id, logged = client.create_run(experiment_id, run_name=scrub(run_name), tags=scrub({**tags, SWEEP_ID: sweep_id})).info.run_id, {}
    missing = {key: value for key, value in scrub(params).items() if key not in logged}  # params are logged once
    if missing:
        client.log_batch(run_id, params=[Param(key, value) for key, value in missing.items()])
    return run_id


def close_sweep(tracking_cfg: Any, run_id: str, status: str, jobs: Optional[int] = None) -> None:
    """The sweep's parent ends (FINISHED, FAILED, KILLED), with the number of jobs it holds."""
    client = mlflow.MlflowClient(str(tracking_cfg.uri))
    if jobs is not None:
        client.log_metric(run_id, "sweep.jobs", float(jobs))
    client.set_terminated(run_id, status=status)


def finished_job(tracking_cfg: Any, parent_run_id: str, config_hash: str, data_fingerprint: str) -> Optional[RunRecord]:
    """A FINISHED job of this sweep with this config and data (the job was done before a kill);
    RUNNING ones with them (their process died) are marked KILLED."""
    uri = str(tracking_cfg.uri)
    parent = fetch_run(uri, parent_run_id)
    same = (f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.config_hash = '{config_hash}' "
            f"and tags.data_fingerprint = '{data_fingerprint}'")
    runs = search(uri, [parent.experiment_id], same, order_by=["attributes.start_time DESC"])
    client = mlflow.MlflowClient(uri)
    for run in runs:
        if run.status == "RUNNING":
            client.set_tag(run.run_id, "note", "its process died; the sweep ran this job again")
            client.set_terminated(run.run_id, status="KILLED")
    return next((r for r in runs if r.status == "FINISHED"), None)


def jobs_of(tracking_cfg: Any, parent_run_id: str) -> int:
    """How many FINISHED jobs the sweep holds."""
    uri = str(tracking_cfg.uri)
    parent = fetch_run(uri, parent_run_id)
    return len(search(uri, [parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'FINISHED'"))
