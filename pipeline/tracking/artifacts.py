"""MLflow artifact repositories that never leave a half-written model that loads.

MLflow copies a logged model's directory into a local artifact store with ``copytree``: a
process killed mid-copy left a model directory with some files whole, one cut short and
others missing, and its ``MLmodel`` (what makes a directory a loadable model) possibly among
the whole ones. These repositories write each file beside its destination and rename it into
place (MLflow's own single-file write), and write every ``MLmodel`` last: a model directory
that has one is complete. Registered for the ``file`` scheme (the artifact location of experiments this project creates) and for
``mlflow-artifacts`` (a tracking server's proxied store) through MLflow's
``mlflow.artifact_repository`` entry point (pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

#: The file that makes a directory an MLflow model: written after everything else.
MARKER = "MLmodel"


def files_marker_last(local_dir: str) -> List[Path]:
    """Every file under ``local_dir``, sorted, each directory's ``MLmodel`` after all others."""
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    return [p for p in files if p.name != MARKER] + [p for p in files if p.name == MARKER]


class _MarkerLast:
    def log_artifacts(self, local_dir: str, artifact_path: Optional[str] = None) -> None:
        for path in files_marker_last(local_dir):
            relative = path.parent.relative_to(local_dir).as_posix()
            parts = [p for p in (artifact_path, relative) if p and p != "."]
            self.log_artifact(str(path), "/".join(parts) or None)  # type: ignore[attr-defined]


class AtomicLocalArtifactRepository(_MarkerLast, LocalArtifactRepository):
    """A local artifact store: every file renamed into place (MLflow's ``log_artifact``), ``MLmodel`` last."""


class MarkerLastMlflowArtifactsRepository(_MarkerLast, MlflowArtifactsRepository):
    """A tracking server's proxied store (each upload is staged and renamed server-side):
    ``MLmodel`` uploaded last."""
