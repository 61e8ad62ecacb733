"""What a run needs to be rerun exactly: code version, package versions, config hash."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

PACKAGES = ("pipeline", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy", "scikit-learn")
_SOURCE_DIR = Path(__file__).resolve().parent


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(_SOURCE_DIR), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_state() -> Dict[str, str]:
    """The pipeline source's commit and whether its tree had uncommitted changes (an installed
    wheel has no source tree: its version is in ``package_versions``)."""
    if not (_SOURCE_DIR.parent / "pyproject.toml").is_file():  # not whatever repository a venv sits in
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def code_digest(roots: Optional[Dict[str, Path]] = None) -> str:
    """sha256 of the pipeline's own code and configs (every ``.py`` of the package and ``.yaml`` of
    its ``conf/``, by their paths inside them): the same for a checkout and a wheel of one commit,
    and what tells two wheels of different commits apart (an installed wheel has no git commit)."""
    from pipeline.config import CONF_DIR

    digest = hashlib.sha256()
    for prefix, root in sorted((roots or {"pipeline": _SOURCE_DIR, "conf": Path(CONF_DIR)}).items()):
        patterns = ("*.yaml",) if prefix == "conf" else ("*.py",)
        # regular files only: an editor's lock file (Emacs's .#cli.py, a dangling link) is not code
        files = sorted(p for pattern in patterns for p in root.rglob(pattern) if "__pycache__" not in p.parts
                       and not p.name.startswith(".") and p.is_file()
                       and not (prefix == "pipeline" and "conf" in p.relative_to(root).parts[:1]))
        for path in files:
            digest.update(f"{prefix}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def package_versions() -> Dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def config_hash(config: Dict[str, Any]) -> str:
    """sha256 of the resolved config, independent of key order."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


#: What MLflow allows in a param's name (its own pattern, ``mlflow.utils.validation``).
PARAM_NAME = re.compile(r"[/\w.\- :]*")


def flatten(config: Dict[str, Any], prefix: str = "") -> Dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``: MLflow params from a nested config. A mapping whose
    keys are data rather than names (``dataset.class_files``' labels: ``c++``, an emoji) that MLflow
    would refuse in a param's name is one param, its JSON."""
    out: Dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(PARAM_NAME.fullmatch(str(k)) for k in value):
            out.update(flatten(value, name + "."))
        elif isinstance(value, dict) and value:
            out[name] = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        else:
            out[name] = "null" if value is None else str(value)
    return out
