"""Four searches at once, against one tracking server and against one local SQLite store:
every run recorded, none lost, none left RUNNING, the store sound.

Slow (a few minutes on 2 cores): `python -m pytest -m stress -n 0 tests/stress`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import List

import pytest
from mlflow import MlflowClient

from conftest import MlflowServer, concurrent_search, runs_in, write_sentiment_csv

pytestmark = pytest.mark.stress

PROCESSES = 4
TRIALS = 3


def _run_searches(tmp_path: Path, extra: List[str]) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=240)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *concurrent_search(data, seed, TRIALS, *extra)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for seed in range(1, PROCESSES + 1)
    ]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, [e[-2000:] for e in errors]


def _assert_every_run_recorded(store_uri: str) -> None:
    client = MlflowClient(store_uri)
    runs = runs_in(store_uri)
    assert not [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(p.data.params["seed"] for p in parents) == [str(s) for s in range(1, PROCESSES + 1)]
    children = Counter(r.data.tags["mlflow.parentRunId"] for r in runs if "tuner.trial_id" in r.data.tags)
    assert children == Counter({p.info.run_id: TRIALS for p in parents})
    refits = Counter(r.data.tags["mlflow.parentRunId"] for r in runs if "refit.seed" in r.data.tags)
    assert refits == Counter({p.info.run_id: 1 for p in parents})  # each search's final model
    for parent in parents:
        assert parent.data.metrics["trials_completed"] == TRIALS and "test_accuracy" in parent.data.metrics
    assert len(client.search_model_versions("name='concurrent'")) == PROCESSES


def test_four_searches_at_once_against_one_tracking_server(tmp_path: Path, server: MlflowServer) -> None:
    _run_searches(tmp_path, [f"tracking.uri={server.url}"])
    _assert_every_run_recorded(server.store_uri)


def test_four_searches_at_once_on_one_local_sqlite_store(tmp_path: Path, store_uri: str) -> None:
    _run_searches(tmp_path, [])
    _assert_every_run_recorded(store_uri)
    with sqlite3.connect(store_uri[len("sqlite:///"):]) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
