"""The raw-text model as an MLflow pyfunc: logged whole, and found again by run id or name.

Owns logging the end-to-end model (raw text -> TextVectorization -> classifier) with the
project's ``pyfunc_model.py`` as its code, optionally registering it, and the model URI of a run
id, a registered name or a URI. Loading it back safely is :mod:`pipeline.tracking.loading`.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.diskfull import writing
from pipeline.errors import TrackingError
from pipeline.redact import scrub
from pipeline.tracking.artifacts import upload_marker_last
from pipeline.tracking.records import RunRecord, fetch_run
from pipeline.tracking.registry import registered_name, served_version
from pipeline.tracking.runs import scrubbed_tags
from pipeline.tracking.store import store_file

PYFUNC_MODEL_FILE = Path(__file__).resolve().parent.parent / "pyfunc_model.py"
#: The name of every logged model, and its path in ``runs:/<run_id>/model``.
MODEL_NAME = "model"


def log_text_model(
    keras_model_path: str,
    classes: List[str],
    requirements: List[str],
    example_texts: List[str],
    registered_model_name: Optional[str] = None,
    version_tags: Optional[Dict[str, str]] = None,
) -> str:
    """Log the end-to-end raw-text model of the active run as an MLflow pyfunc; returns its model URI.

    The model is saved and run on ``example_texts`` locally first, so a model that cannot
    predict raw text is never logged; then it is uploaded one file at a time, ``MLmodel`` last
    (:mod:`pipeline.tracking.artifacts`), so that a process killed mid-upload leaves no model
    directory that has an ``MLmodel`` but lacks a file. As with ``mlflow.pyfunc.log_model``, it
    is a logged model (``models:/<model_id>``) named ``model``, an output of the run
    (``runs:/<run_id>/model``). With ``registered_model_name`` it also becomes a new version of
    that model in the Model Registry (its name scrubbed, :func:`registered_name`), tagged with ``version_tags``.
    """
    from mlflow.entities import LoggedModelOutput

    active = mlflow.active_run()
    if active is None:
        raise TrackingError("a model is logged into a run: no run is active")
    run_id = active.info.run_id
    client = mlflow.MlflowClient()
    params = client.get_run(run_id).data.params
    model = mlflow.initialize_logged_model(name=MODEL_NAME, source_run_id=run_id, params=dict(params), tags=scrubbed_tags())
    try:
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        _link_step_metrics(client, run_id, model.model_id, step=0)
        with writing(f"the model of MLflow run {run_id} ({model.model_id})", store=store_file(mlflow.get_tracking_uri())), \
                tempfile.TemporaryDirectory() as tmp:
            staged = _save_staged(tmp, model, run_id, keras_model_path, classes, requirements, example_texts)
            upload_marker_last(client, model.model_id, staged)
    except Exception:
        with contextlib.suppress(Exception):  # the store may be what failed: keep the first error
            client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    model_uri = f"models:/{model.model_id}"
    if registered_model_name:
        register_model(model_uri, registered_model_name, version_tags or {})
    return model_uri


def register_model(model_uri: str, registered_model_name: str, version_tags: Dict[str, str]) -> Any:
    """A logged model made a new version of ``registered_model_name`` (scrubbed,
    :func:`registered_name`), with ``version_tags`` (scrubbed) from the start: a process killed
    here leaves a version whole or none; returns the version."""
    with _registry_lines_told_once():
        return mlflow.register_model(model_uri, registered_name(registered_model_name),
                                     tags={k: scrub(str(v)) for k, v in version_tags.items()})


def logged_model_exists(uri: str, model_uri: str) -> bool:
    """Whether the logged model ``models:/<model_id>`` is still in the store (not deleted)."""
    try:
        mlflow.MlflowClient(uri).get_logged_model(model_uri.removeprefix("models:/"))
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


#: What ``mlflow.register_model`` prints to stderr on every registration (the run's own line names
#: the registered version): kept back unless ``--verbose``. Its names are quoted by repr: '...' or "...".
_REGISTRY_LINES = re.compile(r"^(Successfully registered model (['\"]).*\2\.|Registered model (['\"]).*\3 already exists\. "
                             r"Creating a new version of this model\.\.\.|Created version '.*' of model (['\"]).*\4\.)$")


class _WithoutRegistryLines:
    """stderr, line by line as written, less MLflow's registration lines (a line MLflow prints
    while it waits for a registry, or anything else, passes at once)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.partial = stream, ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            if not _REGISTRY_LINES.match(line):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close_out(self) -> None:
        if self.partial and not _REGISTRY_LINES.match(self.partial):
            self.stream.write(self.partial)
        self.stream.flush()


@contextlib.contextmanager
def _registry_lines_told_once() -> Any:
    """MLflow's registration lines (printed straight to ``sys.stderr``) kept back unless ``--verbose``."""
    import os
    import sys

    from pipeline.quiet import wants_logs

    if wants_logs(os.environ):
        yield
        return
    filtered = _WithoutRegistryLines(sys.stderr)
    try:
        with contextlib.redirect_stderr(filtered):  # type: ignore[type-var]
            yield
    finally:
        filtered.close_out()


def _save_staged(
    tmp: str, model: Any, run_id: str, keras_model_path: str, classes: List[str], requirements: List[str], example_texts: List[str]
) -> str:
    """The model saved under ``tmp`` as MLflow's ``log_model`` would save it before its upload,
    its ``MLmodel`` naming the logged model and the run; checked to answer its input example.

    The signature is given, not inferred: MLflow infers one by loading the saved model and running
    it on the input example, and the check below loads and runs it again (1.5-2 s each here). It is
    what inference gives (a text column in; label, confidence and a probability per class out), and
    the check's answers must have exactly that signature.
    """
    import shutil

    import numpy as np
    import pandas as pd
    from mlflow.models import Model, infer_signature

    from pipeline.pyfunc_model import answers

    label_map = Path(tmp) / "label_map.json"
    label_map.write_text(json.dumps({"classes": classes}), encoding="utf-8")
    staged = Path(tmp) / MODEL_NAME
    example = pd.DataFrame({"text": example_texts})
    signature = infer_signature(example, answers(classes, np.full((1, len(classes)), 1.0 / len(classes))))
    mlflow.pyfunc.save_model(
        path=str(staged),
        python_model=str(PYFUNC_MODEL_FILE),
        artifacts={"keras_model": keras_model_path, "label_map": str(label_map)},
        input_example=example,
        signature=signature,
        pip_requirements=requirements,
        mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id, model_id=model.model_id),
    )
    answers = mlflow.pyfunc.load_model(str(staged)).predict(example)
    # loading leaves the model code's bytecode behind: not part of the logged model
    for pycache in list(staged.rglob("__pycache__")):
        shutil.rmtree(pycache, ignore_errors=True)
    if len(answers) != len(example_texts):
        raise TrackingError(f"the model answered {len(answers)} of its {len(example_texts)} example texts")
    if infer_signature(example, answers) != signature:
        raise TrackingError(f"the model's answers do not have its signature's columns ({list(answers.columns)})")
    return str(staged)


def _link_step_metrics(client: Any, run_id: str, model_id: str, step: int) -> None:
    """The run's metrics at ``step`` also recorded for the logged model (what ``log_model`` does),
    so that MLflow's model page shows them."""
    from mlflow.entities import Metric

    metrics = [
        Metric(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, run_id=run_id, model_id=model_id,
               dataset_name=m.dataset_name, dataset_digest=m.dataset_digest)
        for key in client.get_run(run_id).data.metrics
        for m in client.get_metric_history(run_id, key)
        if m.step == step and m.model_id is None
    ]
    if metrics:
        client.log_batch(run_id=run_id, metrics=metrics)


def resolve_model(uri: str, ref: str) -> str:
    """A model URI from a run id, a registered model name (its ``champion``; ``NAME@alias``,
    ``NAME/VERSION``), or a URI."""
    if ref.startswith(("runs:/", "models:/")):
        return ref
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        client = mlflow.MlflowClient(uri)
        run = fetch_run(uri, ref)
        if not any(a.path == MODEL_NAME for a in client.list_artifacts(run.run_id)) and not _logged_models(client, run):
            # a member run carries its seed (the search's own run names only the refit's trial)
            member = any(k in run.tags for k in ("refit.seed", "ensemble.seed", "seed_variance.seed"))
            why = ("search trials do not; use the search's run or its registered model" if "tuner.trial_id" in run.tags
                   else "a member of a search's final model; use the search's run or its registered model" if member
                   else f"it is {run.status}" if run.status != "FINISHED" else "it ran with tracking.log_model=false")
            raise TrackingError(f"run {ref} logged no model ({why})")
        return f"runs:/{ref}/{MODEL_NAME}"
    if re.fullmatch(r"[^/@]+(@[\w-]+|/\d+|/latest)", ref):  # NAME@alias, NAME/3, NAME/latest
        return f"models:/{ref}"
    return served_version(uri, ref)


def _logged_models(client: Any, run: RunRecord) -> bool:
    """Whether MLflow 3 logged a model for this run (kept outside the run's artifact tree)."""
    try:
        return bool(client.search_logged_models(experiment_ids=[run.experiment_id], filter_string=f"source_run_id = '{run.run_id}'"))
    except Exception:  # noqa: BLE001 - older stores
        return False
