"""A staged model directory uploaded file by file, ``MLmodel`` last: a model that has one is complete.

MLflow's ``log_model`` copies a model's directory into the artifact store in an order it does
not promise: a process killed mid-copy could leave a model directory with its ``MLmodel`` (what
makes a directory a loadable model) and some of its other files missing. The project's own
logging code (:func:`pipeline.tracking.models.log_text_model`) therefore saves the model locally
first and uploads it here, one file at a time through MLflow's public
``MlflowClient.log_model_artifact``, every ``MLmodel`` after all other files. Each file is
written whole or not at all by MLflow itself: a local (``file``) store writes it beside its
destination and renames it into place (MLflow 3.17), a tracking server's proxied store
(``mlflow-artifacts``) stages each upload and renames it server-side. MLflow's own artifact
repositories are used as they are, for this project and every other program.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

#: The file that makes a directory an MLflow model: uploaded after everything else.
MARKER = "MLmodel"


def files_marker_last(local_dir: str) -> List[Path]:
    """Every file under ``local_dir``, sorted, each directory's ``MLmodel`` after all others."""
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    return [p for p in files if p.name != MARKER] + [p for p in files if p.name == MARKER]


def upload_marker_last(client: Any, model_id: str, local_dir: str) -> List[str]:
    """Upload the model saved in ``local_dir`` into the logged model ``model_id``'s artifacts,
    one file at a time, ``MLmodel`` last; returns the paths uploaded, in order.

    ``client`` is an ``mlflow.MlflowClient`` for the store that holds the logged model.
    """
    uploaded = []
    for path in files_marker_last(local_dir):
        relative = path.parent.relative_to(local_dir).as_posix()
        client.log_model_artifact(model_id, str(path), None if relative == "." else relative)
        uploaded.append(path.relative_to(local_dir).as_posix())
    return uploaded
