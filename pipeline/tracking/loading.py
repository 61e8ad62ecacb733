"""Loading a logged model back: only one this project wrote, and only from inside its own directory.

Owns the checks made before MLflow loads a model, each refusing in one line before anything of it
is unpickled, run or read:

- its code is exactly this project's ``pyfunc_model.py`` (loading a foreign pyfunc would run its
  code or unpickle its object);
- every path its ``MLmodel`` names (``data``, ``code``, the pyfunc's ``artifacts`` and
  ``python_model``, its environment files, its input example) stays inside the model's directory:
  no absolute path, no ``..`` out of it, no symbolic link that points out of it (MLflow joins these
  paths to the model's directory and reads what they name).

A model in a local store is checked and loaded where it is; one on a server is downloaded into a
temporary directory and checked there.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import mlflow

from pipeline.errors import TrackingError, first_line, shown
from pipeline.tracking.models import PYFUNC_MODEL_FILE, resolve_model
from pipeline.tracking.store import using_store

#: Keys of any flavor whose value MLflow joins to the model's directory.
FLAVOR_PATHS = ("data", "code", "python_model", "model_path", "pickled_model")


def _named_paths(meta: Dict[str, Any]) -> Iterator[Tuple[str, str]]:
    """(where in MLmodel, path) for every path the MLmodel names inside the model's directory."""
    flavors = meta.get("flavors") if isinstance(meta.get("flavors"), dict) else {}
    for flavor, conf in flavors.items():
        if not isinstance(conf, dict):
            continue
        for key in FLAVOR_PATHS:
            if isinstance(conf.get(key), str):
                yield f"flavors.{flavor}.{key}", conf[key]
        artifacts = conf.get("artifacts") if isinstance(conf.get("artifacts"), dict) else {}
        for name, info in artifacts.items():
            path = info.get("path") if isinstance(info, dict) else info
            yield f"flavors.{flavor}.artifacts.{name}.path", str(path)
        env = conf.get("env")
        for name, path in (env.items() if isinstance(env, dict) else [("", env)] if isinstance(env, str) else []):
            yield f"flavors.{flavor}.env{'.' + name if name else ''}", str(path)
        if isinstance(conf.get("model_config"), str):
            yield f"flavors.{flavor}.model_config", conf["model_config"]
        if isinstance(conf.get("model_code_path"), str):  # MLflow reads only its name, in the model's directory
            yield f"flavors.{flavor}.model_code_path", os.path.basename(conf["model_code_path"])
    example = meta.get("saved_input_example_info")
    for key in ("artifact_path", "serving_input_path"):
        if isinstance(example, dict) and isinstance(example.get(key), str):
            yield f"saved_input_example_info.{key}", example[key]


def _escapes(path: str) -> bool:
    """Whether a path as written leaves the directory it is joined to (absolute, or ``..`` out)."""
    normal = posixpath.normpath(path)
    return posixpath.isabs(normal) or normal == ".." or normal.startswith("../")


def _outside(model_dir: Optional[Path], meta: Dict[str, Any]) -> Optional[str]:
    """What of the model lies outside ``model_dir``: a path its MLmodel names, or a symbolic link in
    it that points out (``model_dir`` None: the paths as written only)."""
    root = model_dir.resolve() if model_dir is not None else None
    for where, path in _named_paths(meta):
        if _escapes(path) or (root is not None and not (root / path).resolve().is_relative_to(root)):
            return f"its MLmodel names {where}={shown(path)!r}"
    for dirpath, dirnames, filenames in os.walk(root) if root is not None else ():
        for name in dirnames + filenames:
            entry = Path(dirpath) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                return f"{shown(entry.relative_to(root))} is a link to {shown(os.readlink(entry))}"
    return None


def _read_mlmodel(path: Path, model_uri: str) -> Dict[str, Any]:
    import yaml

    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - unreadable, not YAML
        raise TrackingError(f"cannot read model {model_uri}: {first_line(e)}") from None
    return meta if isinstance(meta, dict) else {}


def _code_file(meta: Dict[str, Any], model_uri: str) -> str:
    """The model's one code file, by name, if it is a model from code (else a refusal)."""
    flavors = meta.get("flavors") if isinstance(meta.get("flavors"), dict) else {}
    pyfunc = flavors.get("python_function") if isinstance(flavors.get("python_function"), dict) else {}
    code = os.path.basename(str(pyfunc.get("model_code_path") or ""))  # as MLflow names it
    if pyfunc.get("loader_module") != "mlflow.pyfunc.loaders.code_model" or not code.endswith(".py") or pyfunc.get("code"):
        raise TrackingError(f"{_refused(model_uri)} (loading it would unpickle or run foreign code)")
    if posixpath.normpath(str(pyfunc.get("data") or ".")) != ".":
        # MLflow would load the MLmodel and code file there, not the ones checked here
        raise TrackingError(f"{_refused(model_uri)} (its model is in {shown(pyfunc['data'])!r}, not where its MLmodel is)")
    return code


def _refused(model_uri: str) -> str:
    return f"refusing to load {model_uri}: it is not a text model written by this pipeline"


def _other_code(model_uri: str) -> str:
    """A model whose code file is not this version's: another program's, or an earlier version of
    this pipeline's (each change to ``pyfunc_model.py`` leaves the models logged before it behind)."""
    return (f"refusing to load {model_uri}: its code is not this version's pipeline/pyfunc_model.py (a model logged "
            "by an earlier version of the pipeline, or not by this pipeline); `pipeline rerun RUN_ID` trains and logs "
            "it again with this version")


def _check(meta: Dict[str, Any], model_dir: Optional[Path], model_uri: str) -> str:
    """A model from code that stays inside its directory; returns the name of its code file."""
    outside = _outside(model_dir, meta)
    if outside:
        raise TrackingError(f"refusing to load {model_uri}: {outside}, outside the model's directory")
    return _code_file(meta, model_uri)


def check_own_model(model_uri: str) -> Dict[str, Any]:
    """Refuse, before anything of it is loaded, a model this project did not write, or whose MLmodel
    names a path outside its directory; returns its MLmodel.

    Loading an MLflow pyfunc model runs its code, or unpickles its object: only the raw-text
    model of :func:`~pipeline.tracking.models.log_text_model` is loaded, a model from code whose one
    code file is exactly this project's ``pyfunc_model.py`` (which loads the Keras model in Keras
    safe mode and the label map as JSON).
    """
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/MLmodel", dst_path=tmp))
        except Exception as e:  # noqa: BLE001 - gone, unreadable, not a model
            raise TrackingError(f"cannot read model {model_uri}: {first_line(e)}") from None
        meta = _read_mlmodel(local, model_uri)
        code = _check(meta, None, model_uri)
        try:
            theirs = Path(mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/{code}", dst_path=tmp)).read_bytes()
        except Exception:  # noqa: BLE001
            raise TrackingError(f"{_refused(model_uri)} (its code file {code} is missing)") from None
        if theirs != PYFUNC_MODEL_FILE.read_bytes():
            raise TrackingError(_other_code(model_uri))
    return meta


def _local_dir(model_uri: str) -> Optional[Path]:
    """The model's own directory where its store keeps artifacts on this machine's file system
    (where MLflow would read it in place), else None (a server: the model is downloaded)."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    try:
        if model_uri.startswith("runs:/"):
            run_id, _, name = model_uri[len("runs:/") :].strip("/").partition("/")
            underlying = RunsArtifactRepository.get_underlying_uri(model_uri)
            if not _is_model_dir(underlying):  # MLflow 3 keeps a run's logged model outside its artifacts
                client = mlflow.MlflowClient()
                run = client.get_run(run_id)
                found = client.search_logged_models(
                    experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
                )
                underlying = found[0].artifact_location if found else underlying
        else:
            underlying = ModelsArtifactRepository.get_underlying_uri(model_uri)
    except Exception:  # noqa: BLE001 - not resolvable here: downloaded and checked as a remote one
        return None
    return _is_model_dir(underlying)


def _is_model_dir(uri: str) -> Optional[Path]:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("", "file"):
        return None
    path = Path(urllib.parse.unquote(parts.path))
    return path if (path / "MLmodel").is_file() else None


def load_text_model(uri: str, ref: str) -> Any:
    """The raw-text pyfunc model of a run or a registered model, if this project wrote it and
    it stays inside its own directory."""
    model_uri = resolve_model(uri, ref)
    with using_store(uri), tempfile.TemporaryDirectory() as tmp:
        try:
            check_own_model(model_uri)
            model_dir = _local_dir(model_uri) or Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp))
            # what is loaded is what is checked: its MLmodel and code file, where MLflow reads them
            code = _check(_read_mlmodel(model_dir / "MLmodel", model_uri), model_dir, model_uri)
            if (model_dir / code).read_bytes() != PYFUNC_MODEL_FILE.read_bytes():
                raise TrackingError(_other_code(model_uri))
            return mlflow.pyfunc.load_model(str(model_dir))
        except TrackingError:
            raise
        except Exception as e:  # noqa: BLE001 - deleted files, a foreign model
            raise TrackingError(f"cannot load model {model_uri}: {first_line(e)}") from None
