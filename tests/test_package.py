"""The pipeline as a package: a built wheel, installed into a fresh virtual environment, runs
from a directory that has nothing of the checkout, and a directory's own ``conf/`` extends it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from conftest import REPO, SHRINK

OFFLINE = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _source_copy(dest: Path) -> Path:
    """The files git would put in a clone (committed or not, ignored ones left out)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_a_built_wheel_trains_offline_from_an_empty_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env.update(OFFLINE, TF_CPP_MIN_LOG_LEVEL="2")
    source = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                   check=True, env=env, capture_output=True)
    wheel = next(dist.glob("pipeline-*.whl"))
    venv = tmp_path / "venv"
    # the environment's packages (TensorFlow, MLflow ...) are reused; the pipeline comes only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, env=env, capture_output=True)
    shutil.rmtree(source)  # the checkout the wheel was built from is gone

    work = tmp_path / "empty"
    (work / "conf" / "dataset").mkdir(parents=True)
    # the directory's own conf/ adds a dataset option to the packaged ones
    (work / "conf" / "dataset" / "bbc_slice.yaml").write_text(
        "defaults:\n  - bbc_news\n  - _self_\nname: bbc_slice\nmax_samples: 200\n"
    )
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pipeline.config as c; print(c.__file__); print(c.CONF_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    # installing the package leaves MLflow's own artifact repositories in place, for every program
    probe = ("import importlib.metadata as m; import pipeline.tracking; "
             "from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository as g; "
             "print(sorted(e.name for e in m.entry_points(group='mlflow.artifact_repository') if e.dist.name == 'pipeline')); "
             "print(type(g('file:///tmp/x')).__module__); "
             "print(type(g('mlflow-artifacts:/x', tracking_uri='http://127.0.0.1:5000')).__module__)")
    classes = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=work, env=env, capture_output=True, text=True)
    assert classes.stdout.splitlines() == [
        "[]", "mlflow.store.artifact.local_artifact_repo", "mlflow.store.artifact.mlflow_artifacts_repo"
    ], classes.stdout + classes.stderr[-2000:]

    result = subprocess.run([str(venv / "bin" / "pipeline"), "train", *SHRINK, "dataset=bbc_slice"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}").search_experiments()]
    )
    assert [(r.info.status, r.data.params["dataset.name"], r.data.params["dataset.max_samples"]) for r in runs] == [("FINISHED", "bbc_slice", "200")]
    assert {p.name for p in work.iterdir()} == {"conf", "mlruns", "outputs"}  # the store, and Hydra's job log
