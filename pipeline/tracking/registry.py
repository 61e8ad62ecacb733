"""The MLflow Model Registry: which version of a registered model a search made, and which is newest.

Owns every registry query; registering itself happens when a model is logged
(:func:`pipeline.tracking.models.log_text_model`), so that a version always has its files.
"""

from __future__ import annotations

from typing import Dict, Optional

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.errors import TrackingError, first_line
from pipeline.tracking.redact import redact, scrub


def registered_for(uri: str, name: str, run_id: str, tags: Dict[str, str]) -> bool:
    """Whether a version of ``name`` from ``run_id`` with these tags is registered already
    (a version with no tags at all is one whose process died before tagging it)."""
    try:
        versions = mlflow.MlflowClient(uri).search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        return False
    return any(not v.tags or all(v.tags.get(k) == str(val) for k, val in tags.items()) for v in versions)


def tag_version(name: str, version: Optional[str], tags: Dict[str, str]) -> None:
    """Tag a version just registered (in the active tracking store)."""
    if version is None:
        return
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, scrub(value))


def latest_version(uri: str, name: str) -> str:
    """The newest version of a registered model, as a ``models:/`` URI; a one-line error when none."""
    try:
        versions = mlflow.MlflowClient(uri).search_model_versions(f"name='{name}'")
    except Exception as e:  # noqa: BLE001 - an unusable store
        raise TrackingError(f"cannot read the MLflow model registry at {redact(uri)}: {first_line(e)}") from None
    if not versions:
        raise TrackingError(f"no registered model {name!r} with a version in {redact(uri)} (nor a run id)")
    latest = max(versions, key=lambda v: int(v.version))
    return f"models:/{name}/{latest.version}"
