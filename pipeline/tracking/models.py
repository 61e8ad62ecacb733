"""The raw-text model as an MLflow pyfunc: logged whole, and loaded only if this project wrote it.

Owns logging the end-to-end model (raw text -> TextVectorization -> classifier) with the
project's ``pyfunc_model.py`` as its code, optionally registering it, and loading one back from
a run id, a registered name or a URI after checking (before anything of it is loaded) that its
code is exactly that file: loading a foreign pyfunc would run its code or unpickle its object.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import mlflow

from pipeline.errors import TrackingError, first_line
from pipeline.tracking.records import RunRecord, fetch_run
from pipeline.tracking.registry import served_version, tag_version

PYFUNC_MODEL_FILE = Path(__file__).resolve().parent.parent / "pyfunc_model.py"


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
    if registered_model_name:
        tag_version(registered_model_name, getattr(info, "registered_model_version", None), version_tags or {})
    return info.model_uri


def resolve_model(uri: str, ref: str) -> str:
    """A model URI from a run id, a registered model name (its ``champion``; ``NAME@alias``,
    ``NAME/VERSION``), or a URI."""
    if ref.startswith(("runs:/", "models:/")):
        return ref
    if re.fullmatch(r"[0-9a-f]{32}", ref):
        client = mlflow.MlflowClient(uri)
        run = fetch_run(uri, ref)
        if not any(a.path == "model" for a in client.list_artifacts(run.run_id)) and not _logged_models(client, run):
            raise TrackingError(f"run {ref} logged no model (search trials do not; use the search's run or its registered model)")
        return f"runs:/{ref}/model"
    if re.fullmatch(r"[^/@]+(@[\w-]+|/\d+|/latest)", ref):  # NAME@alias, NAME/3, NAME/latest
        return f"models:/{ref}"
    return served_version(uri, ref)


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
