"""A full disk: a write that fails for want of space is one `error:` line (exit 74), leaves no run
RUNNING and no half-written model or state file, and the same command goes on once there is space.

The disk fills by the file size limit (`RLIMIT_FSIZE`, what `ulimit -f` sets: a write past it fails
with EFBIG), set on the `pipeline` process the test starts, just above what is already written
where the test wants the write to fail: the store's file, the model, a trial's checkpoint. The real
`pipeline tune` and `train`, shrunk; no part of the stack is mocked.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import CLI_OWN_ENV, SHRINK, SPACE, file_size_limit, runs_in, wait_for, write_sentiment_csv
from pipeline.diskfull import full_disk
from pipeline.errors import DiskFull

#: Each test sizes its file limit by what is already written: it starts without the seeded store.
pytestmark = pytest.mark.no_store

EXIT_DISK_FULL = 74


# --- telling a full disk from other failures -----------------------------------------------------


def test_every_form_of_a_full_disk_is_told_and_nothing_else_is(tmp_path: Path) -> None:
    # a write past the file size limit: EFBIG, with the limit in the line
    with file_size_limit(1000):
        with pytest.raises(OSError) as efbig:
            (tmp_path / "big").write_bytes(b"x" * 5000)
        full = full_disk(efbig.value, default="a file")
    assert full is not None and full.what == "a file" and "file size limit of 1000 bytes (ulimit -f)" in full.why

    # no space, a quota: named by the file the error names, or by what the caller was writing
    nospace = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/oracle.json")
    assert full_disk(nospace).what == "/data/oracle.json" and full_disk(nospace).why == "no space left on the device"
    assert full_disk(OSError(errno.EDQUOT, "quota"), what="the model").what == "the model"
    # found through the chain (a library that wraps it), and in h5py's words
    try:
        try:
            raise nospace
        except OSError as e:
            raise RuntimeError("could not save") from e
    except RuntimeError as wrapped:
        assert full_disk(wrapped) is not None
    h5 = OSError("Can't synchronously write data (file write failed: filename = '/p/trial_0/checkpoint.weights.h5', "
                 "file descriptor = 3, errno = 28, error message = 'No space left on device')")
    assert full_disk(h5).what == "/p/trial_0/checkpoint.weights.h5"

    # SQLite's own "database or disk is full" (here: a store at its page limit)
    db = tmp_path / "store.db"
    with sqlite3.connect(db) as con:
        con.execute("create table t (x)")
        con.execute("pragma max_page_count = 2")
        with pytest.raises(sqlite3.OperationalError) as sqlite_full:
            con.executemany("insert into t values (?)", [("x" * 1000,)] * 100)
    assert full_disk(sqlite_full.value, store=str(db)).what == f"the MLflow store {db}"
    # SQLite's "disk I/O error" is a full disk only when the store's file is at the size limit
    with sqlite3.connect(db) as con:
        con.execute("pragma max_page_count = 100000")
        with file_size_limit(db.stat().st_size):
            with pytest.raises(sqlite3.OperationalError) as ioerr:
                con.executemany("insert into t values (?)", [("x" * 1000,)] * 100)
            assert ioerr.value.sqlite_errorname == "SQLITE_IOERR_WRITE"
            assert "file size limit" in full_disk(ioerr.value, store=str(db)).why
            assert full_disk(ioerr.value, store=None) is None  # which file, unknown: not told as a full disk
    assert full_disk(ioerr.value, store=str(db)) is None  # the limit raised: an I/O error of another kind

    # anything else is not a full disk
    for other in (OSError(errno.EACCES, "Permission denied", "/x"), ValueError("bad"), RuntimeError("File not found")):
        assert full_disk(other) is None


def test_a_state_file_that_cannot_be_written_stays_as_it_was_with_nothing_beside_it(tmp_path: Path) -> None:
    from pipeline.tuning.compat import write_json
    from pipeline.tuning.project import STATE_FILE, Project

    oracle = tmp_path / "oracle.json"
    write_json(oracle, {"trials": 1})
    project = Project(tmp_path, "p", {"seed": "1"})
    project.write_state(parent_run_id="abc")
    before = {p.name: p.read_bytes() for p in (oracle, project.path / STATE_FILE)}

    big = {"trials": ["x" * 100] * 100}
    with file_size_limit(2000):
        with pytest.raises(DiskFull) as json_full:
            write_json(oracle, big)
        with pytest.raises(DiskFull) as state_full:
            project.write_state(filler=big)
    assert json_full.value.what == str(oracle) and "file size limit" in json_full.value.why
    assert state_full.value.what == str(project.path / STATE_FILE)
    assert {p.name: p.read_bytes() for p in (oracle, project.path / STATE_FILE)} == before
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(before)  # no temporary file left


def test_a_store_that_fills_up_mid_training_stops_it_and_fit_says_so(tmp_path: Path) -> None:
    """MLflow's Keras callback would log a warning and train on without the epoch; the pipeline's
    stops training at the epoch the store could not record, and raises that after ``fit``."""
    import keras
    import numpy as np

    from pipeline import tracking

    db = new_store(tmp_path)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=["mae", "mape", "msle", "cosine_similarity"])  # rows enough to fill a page soon

    class StoreFillsUp(keras.callbacks.Callback):  # from the third epoch on, the store's file cannot grow
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                resource.setrlimit(resource.RLIMIT_FSIZE, (db.stat().st_size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    logger = tracking.epoch_logger(describe_model=False)
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        with mlflow.start_run() as run:
            history = model.fit(np.ones((8, 4)), np.ones(8), validation_data=(np.ones((8, 4)), np.ones(8)), epochs=400, verbose=0,
                                callbacks=[StoreFillsUp(), logger])
            with pytest.raises(Exception) as stopped:
                tracking.raise_stopped([logger])
            assert full_disk(stopped.value, store=str(db)) is not None
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        mlflow.set_tracking_uri(None)
    trained = len(history.history["loss"])
    assert 2 < trained < 400, trained  # stopped at the first epoch the store could not take
    assert len(MlflowClient(f"sqlite:///{db}").get_metric_history(run.info.run_id, "loss")) == trained - 1


# --- the real commands ----------------------------------------------------------------------------


def cli(args: List[str], cwd: Path, limit: Optional[int] = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`pipeline ...` as run_cli runs it, with the file size limit at ``limit`` bytes."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {k: v for k, v in os.environ.items() if k not in CLI_OWN_ENV}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limited if limit is not None else None)


def one_line_disk_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == EXIT_DISK_FULL, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    print(errors[0])
    return errors[0]


def new_store(tmp_path: Path) -> Path:
    """The SQLite store, created (MLflow's tables) before the limit is set; returns its file."""
    (tmp_path / "mlruns").mkdir()
    db = tmp_path / "mlruns" / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def assert_models_load(tmp_path: Path) -> int:
    """Every model directory with its MLmodel loads and predicts; returns how many there are."""
    models = [p.parent for p in (tmp_path / "mlruns" / "artifacts").rglob("MLmodel")]
    for model_dir in models:
        out = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame({"text": ["a great film", "an awful film"]}))
        assert set(out["label"]) <= {"positive", "negative"}
    return len(models)


def trials_on_disk(tmp_path: Path) -> Counter:
    (project,) = (tmp_path / "tuner").iterdir()
    return Counter(json.loads(p.read_text())["status"] for p in project.glob("trial_*/trial.json"))


def tune_args(tmp_path: Path, trials: int, *extra: str) -> List[str]:
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=200)
    return ["tune", *SHRINK, *SPACE, "dataset=files", f"dataset.path={data}", f"tuner.max_trials={trials}", "baseline.enabled=false",
            "tuner.final.refit=false", "tuner.final.registered_model_name=null", *extra]


def assert_search_whole(tmp_path: Path, store_uri: str, trials: int) -> Counter:
    """Exactly ``trials`` completed trials, one FINISHED run each, nothing RUNNING, the parent
    FINISHED, every model loads; returns the trial runs' (trial, status) counts."""
    assert trials_on_disk(tmp_path) == Counter({"COMPLETED": trials})
    runs = runs_in(store_uri)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    statuses = Counter((r.data.tags["tuner.trial_id"], r.info.status) for r in runs if "tuner.trial_id" in r.data.tags)
    assert sorted(t for t, s in statuses if s == "FINISHED") == [str(i) for i in range(trials)]
    assert all(n == 1 for (_, s), n in statuses.items() if s == "FINISHED")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == trials
    assert "error" not in parent.data.tags  # what stopped it is over
    assert assert_models_load(tmp_path) == 1
    return statuses


@pytest.mark.stress  # with -m stress, to keep the default suite within 15 minutes (a store that fills up mid-training: test_a_store_that_fills_up_mid_training_stops_it_and_fit_says_so)
def test_a_store_that_fills_up_stops_a_search_in_one_line_and_the_same_command_resumes(tmp_path: Path, store_uri: str) -> None:
    db = new_store(tmp_path)
    args = tune_args(tmp_path, 2)
    limit = db.stat().st_size + 16 * 1024  # room for a few pages: the store fills while the search records its start
    stopped = cli(args, tmp_path, limit=limit)
    one_line_disk_error(stopped, f"could not write the MLflow store {db}", f"file size limit of {limit} bytes", "run the same command again")
    runs = runs_in(store_uri)
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert "DiskFull: could not write the MLflow store" in runs[-1].data.tags["error"]

    resumed = cli(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming search" in resumed.stdout
    assert_search_whole(tmp_path, store_uri, 2)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


#: A model bigger than the store's file: a 2048-wide embedding of the CSV's 185 words (1.5 MB of weights).
WIDE = ["model.embedding_dim=2048"]


@pytest.mark.stress  # two train runs, about 50 s
def test_a_model_that_cannot_be_written_leaves_no_model_and_the_same_command_trains_it(tmp_path: Path, store_uri: str) -> None:
    db = new_store(tmp_path)
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=200)
    args = ["train", *SHRINK, "dataset=files", f"dataset.path={data}", "baseline.enabled=false", *WIDE]
    limit = db.stat().st_size + 128 * 1024  # the store's run fits (about 40 kB); the model (1.5 MB) does not
    stopped = cli(args, tmp_path, limit=limit)
    one_line_disk_error(stopped, "could not write the model", f"file size limit of {limit} bytes")
    (run,) = runs_in(store_uri)
    assert run.info.status == "KILLED" and "could not write the model" in run.data.tags["error"]
    assert assert_models_load(tmp_path) == 0  # no model directory has its MLmodel
    assert db.stat().st_size < limit

    again = cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = runs_in(store_uri)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    assert assert_models_load(tmp_path) == 1


@pytest.mark.stress  # about 60 s
def test_a_trial_checkpoint_that_cannot_be_written_stops_the_search_and_the_trial_runs_again(tmp_path: Path, store_uri: str) -> None:
    db = new_store(tmp_path)
    args = tune_args(tmp_path, 2, *WIDE, "search_space.model.embedding_dim={type:choice,values:[2048]}")
    limit = db.stat().st_size + 128 * 1024  # the store fits; the first trial's checkpoint (weights and Adam's, 4.5 MB) does not
    stopped = cli(args, tmp_path, limit=limit)
    one_line_disk_error(stopped, "could not write", "trial_0/checkpoint.weights.h5", f"file size limit of {limit} bytes")
    assert trials_on_disk(tmp_path) == Counter({"RUNNING": 1})  # not FAILED: it runs again
    runs = runs_in(store_uri)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("files-reviews-random2-lstm-s42", "KILLED"), ("trial-0", "KILLED")]

    resumed = cli(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    statuses = assert_search_whole(tmp_path, store_uri, 2)
    assert statuses == Counter({("0", "KILLED"): 1, ("0", "FINISHED"): 1, ("1", "FINISHED"): 1})


@pytest.mark.stress  # about 70 s
def test_a_disk_full_that_leaves_a_run_open_is_said_and_the_same_command_closes_it(tmp_path: Path, store_uri: str) -> None:
    """The whole disk full at once (the limit of the running search lowered to 1 byte) once its
    trials are done: nothing can be written, not even the search's end; the line says which run
    stays open, and the search run again closes it. (Not mid-trial: HDF5, which writes a trial's
    checkpoint, can crash on a write that fails midway, and the process then ends as after a kill -9.)"""
    new_store(tmp_path)
    args = tune_args(tmp_path, 2)
    env = {k: v for k, v in os.environ.items() if k not in CLI_OWN_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def trials_done():
            return sum(r.info.status == "FINISHED" for r in runs_in(store_uri) if "tuner.trial_id" in r.data.tags) == 2

        wait_for(trials_done, 300, "the trials to finish")
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1, 1))
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = one_line_disk_error(stopped, "could not write", "file size limit of 1 bytes", "could not record the end of run(s)")
    (parent,) = [r for r in runs_in(store_uri) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "RUNNING" and parent.info.run_id in line, line
    assert assert_models_load(tmp_path) == 0

    resumed = cli(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming search {tmp_path / 'tuner'}" in resumed.stdout
    assert_search_whole(tmp_path, store_uri, 2)
