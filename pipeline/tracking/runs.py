"""MLflow runs opened and always closed.

Owns :func:`tracked_run`, the one way this project opens a run: FINISHED on success, KILLED on
Ctrl-C, a lost server or a full disk (temporary failures: the same command goes on), FAILED on
any other exception (its first line in the ``error`` tag), so no run is ever left RUNNING by this
process, unless the store itself is too full to record its end (the error says so, and the same
command closes it); and the experiment a run goes to, created on first
use with its artifacts in one safe folder under ``tracking.artifact_location``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.diskfull import full_disk
from pipeline.errors import DiskFull, TrackingError, first_line
from pipeline.redact import scrub
from pipeline.tracking.resilience import close_dead_runs, end_quietly, is_lost, lost
from pipeline.tracking.store import store_file, using_store


def folder_name(name: str) -> str:
    """A name made one safe folder name: an experiment called ``../../x`` or ``/Users/a/b``
    keeps its artifacts inside ``tracking.artifact_location``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


#: MLflow's experiment type: the UI opens a model-training experiment on its runs ("Model
#: training"), not on GenAI traces.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def scrubbed_tags(tags: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``tags`` with the ones MLflow adds to every run and logged model it opens (the user, the
    program's path, its git branch and remote, ``MLFLOW_RUN_CONTEXT``), all scrubbed: given to
    MLflow as the caller's own, they take the place of its unscrubbed ones."""
    from mlflow.tracking.context.registry import resolve_tags

    return scrub(resolve_tags(tags))


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
        if EXPERIMENT_KIND not in experiment.tags:  # made before this tag; a kind someone chose stays
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return experiment.experiment_id
    location = None
    if tracking_cfg.artifact_location and urllib.parse.urlsplit(str(tracking_cfg.uri)).scheme == "sqlite":
        location = (Path(tracking_cfg.artifact_location).resolve() / folder_name(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # created meanwhile by another process
        if experiment is None:
            raise
        return experiment.experiment_id


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
    A failure's first line is kept in the run's ``error`` tag. ``tags`` with
    :func:`~pipeline.tracking.resilience.process_tag` in them name this process as the run's
    owner: if it dies with the run open, the next top-level run in the experiment on this
    machine closes it KILLED (opening one closes those first).
    """
    with using_store(str(tracking_cfg.uri)):
        if run_id is not None:
            active = mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
        else:
            experiment_id = _experiment_id(tracking_cfg)
            if parent_run_id is None:
                close_dead_runs(mlflow.MlflowClient(), experiment_id)
            active = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=scrub(run_name),
                tags=scrubbed_tags(tags),
                parent_run_id=parent_run_id,
                nested=parent_run_id is not None,
            )
        status = "FAILED"
        store = store_file(str(tracking_cfg.uri))
        full: Optional[DiskFull] = None
        try:
            if run_id is not None:  # inside: a failure to tag the re-opened run closes it too
                mlflow.set_tags(scrub(tags))
                if "error" in active.data.tags:  # what stopped it before (a full disk) is over: it goes on
                    mlflow.MlflowClient().delete_tag(run_id, "error")
            yield active
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as e:
            if is_lost(e):
                # KILLED if the server answers at once; else marked so when the search resumes.
                end_quietly("KILLED")
                raise lost(e, str(tracking_cfg.uri)) from None
            full = full_disk(e, store=store, default=f"the artifacts of MLflow run {active.info.run_id}")
            if full is not None:
                # a temporary failure, as a lost server is: KILLED, and the same command goes on
                status = "KILLED"
                with contextlib.suppress(Exception):  # the store may be what is full
                    mlflow.set_tag("error", scrub(f"{type(full).__name__}: {first_line(full)}")[:5000])
                if full is e:
                    raise
                raise full from e
            mlflow.set_tag("error", scrub(f"{type(e).__name__}: {first_line(e)}")[:5000])
            raise
        finally:
            if mlflow.active_run() is not None and mlflow.active_run().info.run_id == active.info.run_id:
                try:
                    mlflow.end_run(status)  # takes the run off this process's stack first, then records it
                except Exception as e:
                    if is_lost(e):
                        raise lost(e, str(tracking_cfg.uri)) from None
                    closing = full or full_disk(e, store=store)
                    if closing is None:
                        raise
                    # The store cannot record the run's end: it stays RUNNING there until the
                    # same command runs again and closes it (a resumed search's reconciliation).
                    closing.unclosed.append(active.info.run_id)
                    raise closing from None


def run_exists(tracking_cfg: Any, run_id: str) -> bool:
    """Whether ``run_id`` is a live (not deleted) run in this store."""
    try:
        run = mlflow.MlflowClient(str(tracking_cfg.uri)).get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage == "active"
