"""Fault injection: `pipeline tune` killed with SIGKILL at random moments, 20 times, the same
command rerun after each kill; then the search is whole, and at least half the kills landed inside
a trial (a trial run the kill left RUNNING, marked KILLED when the search resumed).

Slow (about 7 minutes): not in the default run. `python -m pytest -m stress -n 0 tests/stress`.
FAULT_SEED=N draws other kill moments.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Set

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import SHRINK, run_cli, runs_in, write_sentiment_csv

pytestmark = pytest.mark.stress

KILLS = 20
TRIALS = 8
#: Trials long enough (seconds each, longer than most kills' wait once a trial is training) that the
#: kills land while the search runs: on 300 texts for 3 epochs a trial took under a second here, a
#: process finished six before its first kill, and the search ended after four or five kills, leaving
#: the rest to land in the start-up of a finished search (and under half of them mid-trial).
EPOCHS = 20
TEXTS = 3000


def _statuses(store_uri: str):
    return MlflowClient(store_uri), runs_in(store_uri)


def _search_done(store_uri: str) -> bool:
    return sum(1 for r in runs_in(store_uri) if "tuner.trial_id" in r.data.tags and r.info.status == "FINISHED") >= TRIALS


def _running_trial_runs(store_uri: str) -> Set[str]:
    return {r.info.run_id for r in runs_in(store_uri) if "tuner.trial_id" in r.data.tags and r.info.status == "RUNNING"}


#: Three kills in four wait for a trial of the process to be training, then land up to TRIAL_WINDOW s
#: later (in that trial, a later one, or between them); the others at any moment of the process
#: (start-up, the search's end), as all of them did before, when fewer than half landed mid-trial.
IN_TRIAL_SHARE, TRIAL_WINDOW, ANY_MOMENT = 0.75, 4.0, (0.5, 18.0)


def test_twenty_sigkills_at_random_moments_lose_nothing(tmp_path: Path, store_uri: str) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=TEXTS)
    args = ["tune", *SHRINK, "dataset=files", f"dataset.path={data}", f"tuner.max_trials={TRIALS}", f"training.epochs={EPOCHS}",
            "training.early_stopping.enabled=false", "tuner.prune.rule=none", "tuner.final.registered_model_name=faulty", "tuner.cv_folds=1",
            "search_space.model.units={type:int,min:8,max:32,step:8}", "search_space.model.embedding_dim={type:choice,values:[8,16]}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("HYDRA_FULL_ERROR", None)
    rng = random.Random(int(os.environ.get("FAULT_SEED", "0")))
    kills, log = 0, []
    interrupted: Set[str] = set()  # trial runs a kill left RUNNING: the kill landed inside that trial
    mid_trial = 0
    (tmp_path / "mlruns").mkdir(exist_ok=True)  # (the store fixture made it)
    MlflowClient(store_uri).search_experiments()  # the store exists before the first poll
    while kills < KILLS:
        # once every trial has finished, no trial of a process can be waited for: any moment then
        in_trial = rng.random() < IN_TRIAL_SHARE and not _search_done(store_uri)
        delay = rng.uniform(0.0, TRIAL_WINDOW) if in_trial else rng.uniform(*ANY_MOMENT)
        before = _running_trial_runs(store_uri)
        started = time.monotonic()
        stderr = tmp_path / "stderr.txt"
        with stderr.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env,
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            if in_trial:  # a trial run of this process, training
                while proc.poll() is None and not _running_trial_runs(store_uri) - before and time.monotonic() - started < 300:
                    time.sleep(0.2)
            proc.wait(timeout=delay)
            assert proc.returncode == 0, stderr.read_text()[-3000:]  # a run that finished before its kill must have succeeded
            log.append(f"finished before its kill ({time.monotonic() - started:.1f} s)")
            print(log[-1], flush=True)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
            left = _running_trial_runs(store_uri) - before
            interrupted |= left
            mid_trial += bool(left)
            _, runs = _statuses(store_uri)
            trials_done = sum(1 for r in runs if "tuner.trial_id" in r.data.tags and r.info.status == "FINISHED")
            where = f"mid-trial ({', '.join(sorted(left))[:12]}...)" if left else "outside a trial"
            log.append(f"SIGKILL {kills} at {time.monotonic() - started:.1f} s, {where}; {trials_done} trial runs finished so far")
            print(log[-1], flush=True)
    print(f"{mid_trial} of {KILLS} kills landed mid-trial")

    final = run_cli(args, cwd=tmp_path, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    # Keras Tuner: exactly max_trials trials, all completed
    project = next((tmp_path / "tuner").iterdir())
    trials = [pd.read_json(p, typ="series") for p in project.glob("trial_*/trial.json")]
    assert Counter(t["status"] for t in trials) == Counter({"COMPLETED": TRIALS})

    # MLflow: nothing RUNNING; one FINISHED run per trial, with every epoch; the parent whole
    client, runs = _statuses(store_uri)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    # at least half the kills landed inside a trial, and every trial run they cut off was marked KILLED
    assert mid_trial >= KILLS / 2, f"only {mid_trial} of {KILLS} kills landed mid-trial"
    assert {r.info.status for r in runs if r.info.run_id in interrupted} == {"KILLED"}
    finished = Counter(r.data.tags["tuner.trial_id"] for r in runs if "tuner.trial_id" in r.data.tags and r.info.status == "FINISHED")
    assert len(finished) == TRIALS and set(finished.values()) == {1}, finished
    for run in runs:
        if "tuner.trial_id" in run.data.tags and run.info.status == "FINISHED":
            assert len(client.get_metric_history(run.info.run_id, "val_loss")) == EPOCHS
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == TRIALS
    # its summaries, logged again by each process that went over the search's end, one point each
    for key in ("best_score", "trials_completed", "baseline.test_accuracy", "test_accuracy", "test_accuracy_ci_low"):
        assert len(client.get_metric_history(parent.info.run_id, key)) == 1, key
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for d in ("search", "plots", "evaluation") for a in client.list_artifacts(parent.info.run_id, d)}
    assert {"search/trials.csv", "search/best.json", "plots/search_scores.png", "evaluation/confusion_matrix.json"} <= artifacts
    assert len(client.search_model_versions("name='faulty'")) == 1

    # the store is sound
    db = Path(store_uri[len("sqlite:///"):])
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # every model directory in the store that has its MLmodel is whole: it loads and predicts
    models = [p.parent for p in (tmp_path / "mlruns" / "artifacts").rglob("MLmodel")]
    assert models
    for model_dir in models:
        model = mlflow.pyfunc.load_model(str(model_dir))
        out = model.predict(pd.DataFrame({"text": ["a great film", "an awful film"]}))
        assert set(out["label"]) <= {"positive", "negative"}
        assert all(abs(sum(p.values()) - 1) < 1e-5 for p in out["probabilities"])
    predicted = run_cli(["predict", "faulty", "superb acting"], cwd=tmp_path)
    assert predicted.returncode == 0 and '"label": "' in predicted.stdout, predicted.stderr[-2000:]
