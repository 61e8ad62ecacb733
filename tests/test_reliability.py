"""Crashes and lost servers lose nothing: models written whole, Keras Tuner's state and the
trial runs put back in agreement after a crash, a tracking server stopped and started again
mid-search (a real `mlflow server`)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature, infer_signature

from conftest import SHRINK, SPACE, MlflowServer, file_size_limit, run_cli, runs_in, wait_for
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


def _logged_model(store_uri: str, tmp_path: Path):
    """A client on a fresh store and a new logged model (PENDING, no files) in it."""
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("e", artifact_location=(tmp_path / "store").as_uri())
    return client, client.create_logged_model(experiment_id, name="model")


def _local_dir(model) -> Path:
    return Path(model.artifact_location.removeprefix("file://"))


def test_a_model_uploaded_into_the_store_has_its_mlmodel_only_when_every_file_is_whole(tmp_path: Path, store_uri: str) -> None:
    source = _model_dir(tmp_path / "source")
    whole = _tree(source)
    assert [p.name for p in artifacts.files_marker_last(str(source))][-1] == "MLmodel"
    client, first = _logged_model(store_uri, tmp_path)
    # the upload stops before file N (Ctrl-C), or halfway through writing it (the disk full there)
    for crash_at, moment in [(n, m) for n in range(len(whole)) for m in ("before", "midway")]:
        model = first if (crash_at, moment) == (0, "before") else client.create_logged_model(first.experiment_id, name="model")
        calls = []

        class Dying:
            def log_model_artifact(self, model_id, local_path, artifact_path=None, _n=crash_at, _moment=moment):
                if len(calls) == _n:
                    if _moment == "before":
                        raise KeyboardInterrupt
                    with file_size_limit(Path(local_path).stat().st_size // 2):
                        client.log_model_artifact(model_id, local_path, artifact_path)
                    raise AssertionError(f"{local_path} was written past the file size limit")
                calls.append(local_path)
                client.log_model_artifact(model_id, local_path, artifact_path)

        with pytest.raises(KeyboardInterrupt if moment == "before" else OSError) as stopped:
            artifacts.upload_marker_last(Dying(), model.model_id, str(source))
        assert moment == "before" or stopped.value.errno == errno.EFBIG
        stored = _local_dir(model)
        written = _tree(stored) if stored.exists() else {}
        assert all(written[name] == whole.get(name) for name in written), f"a file was written in part ({moment} file {crash_at})"
        assert sorted(written) == sorted(calls_name(source, calls)) and "MLmodel" not in written
    model = client.create_logged_model(first.experiment_id, name="model")
    order = artifacts.upload_marker_last(client, model.model_id, str(source))
    assert order[-1] == "MLmodel" and sorted(order) == sorted(whole)
    assert _tree(_local_dir(model)) == whole


def calls_name(source: Path, calls: list) -> list:
    """The model's names of the files uploaded whole (``calls``: their local paths)."""
    return [Path(c).relative_to(source).as_posix() for c in calls]


_KILLED_MID_FILE = """
import os, shutil, signal, sys
from mlflow import MlflowClient
from mlflow.store.artifact import local_artifact_repo
from pipeline.tracking import artifacts

def half_then_killed(src, dst, length=0):
    data = src.read()
    dst.write(data[: len(data) // 2])
    dst.flush()
    os.kill(os.getpid(), signal.SIGKILL)

local_artifact_repo.shutil.copyfileobj = half_then_killed
artifacts.upload_marker_last(MlflowClient(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def test_a_process_killed_mid_file_leaves_no_model_and_no_file_in_part(tmp_path: Path, store_uri: str) -> None:
    source = _model_dir(tmp_path / "source")
    _, model = _logged_model(store_uri, tmp_path)
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_FILE, store_uri, model.model_id, str(source)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stored = _local_dir(model)
    names = {p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file()} if stored.exists() else set()
    assert "MLmodel" not in names
    assert not names & set(_tree(source)), f"a file of the model is in the store in part: {names}"


def test_mlflow_keeps_its_own_artifact_repositories() -> None:
    """No MLflow artifact repository of this project replaces MLflow's (an entry point would, for
    every program in the environment). The installed wheel is checked in tests/test_package.py."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    assert type(get_artifact_repository("file:///tmp/anywhere")) is LocalArtifactRepository
    assert type(get_artifact_repository("mlflow-artifacts:/x", tracking_uri="http://127.0.0.1:5000")) is MlflowArtifactsRepository


def _tiny_text_model(path: Path) -> str:
    import keras

    vectorizer = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorizer.adapt(["a good film", "a bad film"])
    text = keras.Input(shape=(), dtype="string", name="text")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(vectorizer(text)))
    keras.Model(text, keras.layers.Dense(2, activation="softmax")(hidden)).save(path)
    return str(path)


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_a_logged_model_is_uploaded_mlmodel_last_and_loads_by_run_and_by_name(
    tmp_path: Path, store_uri: str, where: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import yaml

    uri = request.getfixturevalue("server").url if where == "server" else store_uri
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    keras_model = _tiny_text_model(tmp_path / "m.keras")
    uploads = []
    real = MlflowClient.log_model_artifact

    def recorded(self, model_id, local_path, artifact_path=None):
        uploads.append("/".join(p for p in (artifact_path, Path(local_path).name) if p))
        return real(self, model_id, local_path, artifact_path)

    monkeypatch.setattr(MlflowClient, "log_model_artifact", recorded)
    # loading the staged model to check it writes its code's bytecode beside it, unless Python is told
    # not to (PYTHONDONTWRITEBYTECODE, as on some machines): written here, so none must be uploaded
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # MLflow resolves runs:/ URIs of logged models in the current store
    try:
        with mlflow.start_run() as run:
            mlflow.log_metric("test_accuracy", 0.5)
            model_uri = tracking.log_text_model(keras_model, ["neg", "pos"], ["mlflow"], ["a good film"], "tiny", {"source": "test"})
        run_id = run.info.run_id
        assert uploads[-1] == "MLmodel" and uploads.count("MLmodel") == 1 and "artifacts/m.keras" in uploads[:-1], uploads

        client = MlflowClient(uri)
        model_id = model_uri.removeprefix("models:/")
        logged = client.get_logged_model(model_id)
        assert str(logged.status) == "READY" and logged.source_run_id == run_id and logged.name == "model"
        assert [m.key for m in logged.metrics] == ["test_accuracy"]
        assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model_id]
        version = client.get_model_version("tiny", "1")
        assert version.source == model_uri and version.run_id == run_id and version.tags == {"source": "test"}
        meta = yaml.safe_load(Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/MLmodel")).read_text())
        assert (meta["model_id"], meta["run_id"], meta["artifact_path"]) == (model_id, run_id, logged.artifact_location)
        # the signature the UI's model page and a server show: a text in; a label, its confidence and
        # a probability for every class out, as the model answers
        signature = ModelSignature.from_dict(meta["signature"])
        assert signature.inputs.input_names() == ["text"]
        assert signature.outputs.input_names() == ["label", "confidence", "probabilities"]
        assert sorted(signature.outputs.to_dict()[2]["properties"]) == ["neg", "pos"]
        assert not [u for u in uploads if "__pycache__" in u]
    finally:
        mlflow.set_tracking_uri(previous)
    for ref in (run_id, "tiny"):
        predictions = tracking.load_text_model(uri, ref).predict(pd.DataFrame({"text": ["a good film", "bad"]}))
        assert list(predictions.columns) == ["label", "confidence", "probabilities"] and len(predictions) == 2
        assert set(predictions["label"]) <= {"neg", "pos"}
        assert infer_signature(pd.DataFrame({"text": ["a good film"]}), predictions) == signature


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


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_a_server_stopped_mid_search_and_back_within_the_retries_loses_nothing(tmp_path: Path, server: MlflowServer) -> None:
    _, code, err = _search_through_an_outage(tmp_path, server, retries=6, back_after=3)
    assert code == 0, err[-3000:]
    _assert_complete(server.store_uri, TRIALS, EPOCHS)


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
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


def _process_of_a_finished_child() -> str:
    """The ``pipeline.process`` tag of a process of this machine that has ended."""
    child = subprocess.run([sys.executable, "-c", "from pipeline.tracking.resilience import process_tag, PROCESS; "
                            "print(process_tag()[PROCESS])"], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    return child.stdout.strip()


def test_runs_whose_process_died_are_closed_by_the_next_run_on_this_machine_and_no_others(tmp_path: Path, store_uri: str, make_cfg) -> None:
    """A `pipeline train` killed with SIGKILL (or whose end a full store could not record) leaves
    its run RUNNING: the next run in the experiment closes it KILLED, naming the process; runs of
    live processes, of another machine, or without an owner (a search's trial runs, closed by
    its own resume) stay as they are."""
    killed = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", *SHRINK, "dataset.max_samples=300", "training.epochs=50",
                               "training.early_stopping.patience=50"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(r.info.status == "RUNNING" for r in runs_in(store_uri)), 180, "the train run to open")
    finally:
        killed.kill()
        killed.wait()
    (dead_train,) = runs_in(store_uri)
    assert dead_train.info.status == "RUNNING" and dead_train.data.tags[tracking.resilience.PROCESS].split(":")[1] == str(killed.pid)

    client = MlflowClient(store_uri)
    experiment_id = dead_train.info.experiment_id
    own = tracking.process_tag()[tracking.resilience.PROCESS]
    machine, pid, started = own.split(":")
    owners = {
        "dead": _process_of_a_finished_child(),
        "alive": own,  # this test's process
        "pid used again": f"{machine}:{pid}:{int(started or 0) + 1}",  # this pid, started at another time
        "another machine": f"{'0' * 16}:1:1",
    }
    made = {name: client.create_run(experiment_id, run_name=name, tags={tracking.resilience.PROCESS: owner}).info.run_id
            for name, owner in owners.items()}
    made["no owner"] = client.create_run(experiment_id, run_name="no owner").info.run_id

    from pipeline import train

    train.train_and_record(make_cfg("dataset.max_samples=100", "tracking.log_model=false"))  # the next run, in this process
    status = {name: client.get_run(run_id).info.status for name, run_id in made.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "pid used again": "KILLED", "another machine": "RUNNING", "no owner": "RUNNING"}
    closed = client.get_run(dead_train.info.run_id)
    assert closed.info.status == "KILLED" and f"(pid {killed.pid}) ended without closing it" in closed.data.tags["error"]
    assert sorted(r.info.status for r in runs_in(store_uri)) == ["FINISHED", "KILLED", "KILLED", "KILLED", "RUNNING", "RUNNING", "RUNNING"]
