"""Crashes and lost servers lose nothing: models written whole, Keras Tuner's state and the
trial runs put back in agreement after a crash, a tracking server stopped and started again
mid-search (a real `mlflow server`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest
from mlflow import MlflowClient

from conftest import SHRINK, SPACE, MlflowServer, run_cli, runs_in, wait_for
from pipeline import tracking
from pipeline.tracking import artifacts

SMALL = [*SHRINK, "dataset.max_samples=200", *SPACE]


# --- a model directory is complete whenever it has its MLmodel ------------------------------


def _model_dir(root: Path) -> Path:
    (root / "artifacts").mkdir(parents=True)
    (root / "artifacts" / "keras_model.keras").write_bytes(os.urandom(300_000))
    (root / "artifacts" / "label_map.json").write_text('{"classes": ["a", "b"]}')
    (root / "MLmodel").write_text("flavors: {python_function: {}}\n")
    (root / "python_model.py").write_text("x = 1\n")
    (root / "requirements.txt").write_text("mlflow\n")
    return root


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_model_copied_into_the_store_has_its_mlmodel_only_when_every_file_is_whole(tmp_path: Path) -> None:
    source = _model_dir(tmp_path / "source")
    assert [p.name for p in artifacts.files_marker_last(str(source))][-1] == "MLmodel"
    n = len(_tree(source))
    for crash_after in range(n):
        store = tmp_path / f"store{crash_after}"
        repo = artifacts.AtomicLocalArtifactRepository(store.as_uri())
        real, calls = repo.log_artifact, []

        def dying(local_file, artifact_path=None, _real=real, _calls=calls, _n=crash_after):
            if len(_calls) == _n:
                raise KeyboardInterrupt  # the process stops here
            _calls.append(local_file)
            _real(local_file, artifact_path)

        repo.log_artifact = dying
        with pytest.raises(KeyboardInterrupt):
            repo.log_artifacts(str(source), "model")
        written = _tree(store / "model") if (store / "model").exists() else {}
        assert "MLmodel" not in written
        assert all(written[name] == _tree(source)[name] for name in written), "a file was written in part"
    store = tmp_path / "whole"
    artifacts.AtomicLocalArtifactRepository(store.as_uri()).log_artifacts(str(source), "model")
    assert _tree(store / "model") == _tree(source)


def test_mlflow_uses_the_whole_or_nothing_stores() -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    assert isinstance(get_artifact_repository("file:///tmp/anywhere"), artifacts.AtomicLocalArtifactRepository)


# --- the trial runs agree with the tuner's trials after a crash -------------------------------


def test_trial_runs_are_closed_to_agree_with_the_tuner(tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg()
    uri = str(cfg.tracking.uri)
    tracking.preflight(cfg.tracking)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("e")
    parent = client.create_run(experiment_id).info.run_id

    def child(trial_id, status, **tags):
        run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, **({"tuner.trial_id": trial_id} if trial_id else {}), **tags})
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    runs = {
        "done": child("0", "FINISHED"),
        "died_after_completing": child("1", "RUNNING"),
        "died_mid_trial": child("2", "RUNNING"),
        "finished_but_not_recorded": child("3", "FINISHED"),
        "failed": child("4", "FAILED"),
        "seed_variance": child(None, "RUNNING", **{"seed_variance.seed": "1"}),
    }
    statuses = {"0": "COMPLETED", "1": "COMPLETED", "2": "RUNNING", "3": "RUNNING", "4": "FAILED"}
    killed = tracking.reconcile_children(cfg.tracking, parent, statuses)
    after = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert after == {
        "done": "FINISHED",
        "died_after_completing": "FINISHED",
        "died_mid_trial": "KILLED",
        "finished_but_not_recorded": "KILLED",
        "failed": "FAILED",
        "seed_variance": "RUNNING",  # not a trial: the seed-variance step closes it when it runs again
    }
    assert sorted(killed) == sorted([runs["died_mid_trial"], runs["finished_but_not_recorded"]])

    # a trial run again mid-search after a cut-off answer: its live runs, RUNNING or FINISHED, are closed
    again = {"running": child("5", "RUNNING"), "finished": child("5", "FINISHED"), "failed": child("5", "FAILED")}
    tracking.close_trial_runs(cfg.tracking, parent, "5", "cut off")
    assert {name: client.get_run(run_id).info.status for name, run_id in again.items()} == {
        "running": "KILLED", "finished": "KILLED", "failed": "FAILED"}
    assert client.get_run(runs["done"]).info.status == "FINISHED"  # another trial's run is left alone
    client.set_terminated(runs["seed_variance"], "KILLED")
    client.set_terminated(parent, "KILLED")


# --- a tracking server lost mid-search ----------------------------------------------------------


def _children(store_uri: str):
    return [r for r in runs_in(store_uri) if "tuner.trial_id" in r.data.tags]


def _assert_complete(store_uri: str, trials: int, epochs: int) -> None:
    client = MlflowClient(store_uri)
    runs = runs_in(store_uri)
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    finished = Counter(r.data.tags["tuner.trial_id"] for r in runs if "tuner.trial_id" in r.data.tags and r.info.status == "FINISHED")
    assert sorted(finished) == [str(i) for i in range(trials)] and set(finished.values()) == {1}, finished
    for run in runs:
        if "tuner.trial_id" in run.data.tags and run.info.status == "FINISHED":
            assert len(client.get_metric_history(run.info.run_id, "val_loss")) == epochs  # no epoch dropped
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == trials


EPOCHS, TRIALS = 3, 3


def _search_through_an_outage(tmp_path: Path, server: MlflowServer, retries: int, back_after: Optional[float]):
    """Start a search, kill the server once the first trial run exists, and start it again
    ``back_after`` seconds later (or not); returns the command, its exit status and stderr."""
    args = ["tune", *SMALL, f"tuner.max_trials={TRIALS}", f"training.epochs={EPOCHS}", "training.early_stopping.enabled=false",
            "tracking.log_model=false", f"tracking.uri={server.url}", f"tracking.max_retries={retries}", "tracking.backoff_factor=1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _children(server.store_uri), 240, "the first trial run")
        server.stop(sig=9)
        if back_after is not None:
            time.sleep(back_after)
            assert proc.poll() is None, "the search ended before the outage"
            server.start()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return args, proc.returncode, err


def test_a_server_stopped_mid_search_and_back_within_the_retries_loses_nothing(tmp_path: Path, server: MlflowServer) -> None:
    _, code, err = _search_through_an_outage(tmp_path, server, retries=6, back_after=3)
    assert code == 0, err[-3000:]
    _assert_complete(server.store_uri, TRIALS, EPOCHS)


def test_a_server_gone_for_longer_stops_the_search_in_one_line_and_the_same_command_resumes(tmp_path: Path, server: MlflowServer) -> None:
    args, code, err = _search_through_an_outage(tmp_path, server, retries=1, back_after=None)
    assert code == 75, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "lost the MLflow tracking server" in errors[0] and "run the same command again" in errors[0], err[-2000:]

    server.start()
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming search" in result.stdout
    _assert_complete(server.store_uri, TRIALS, EPOCHS)
