"""A real PostgreSQL store behind `mlflow server` (a throwaway cluster on 127.0.0.1, artifacts in a
local directory): four searches at once; the server killed (its whole process group) and started
again on the same port while all four are mid-search; then one search killed with SIGKILL
mid-trial and resumed with the same command. Afterwards every search has exactly its trials,
nothing is RUNNING, and every model loads through the server and predicts.

Slow (minutes on 2 cores): `python -m pytest -m stress -n 0 tests/stress/test_postgres_searches.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import SPACE, MlflowServer, concurrent_search, runs_in, wait_for, write_sentiment_csv

pytestmark = pytest.mark.stress

SEARCHES = 4
TRIALS = 4


class Searches:
    """The searches' processes, each in its own process group with its output in a file; any
    still running when the test ends are killed."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.data = write_sentiment_csv(tmp_path / "reviews.csv", n=240)
        self.procs: Dict[int, subprocess.Popen] = {}
        self.logs: Dict[int, List[Path]] = {}

    def args(self, seed: int) -> List[str]:
        # the retries a server restart needs are the defaults (tracking.max_retries=7, backoff_factor=2)
        return concurrent_search(self.data, seed, TRIALS, *SPACE, "training.early_stopping.enabled=false", f"tracking.uri={self.url}")

    def start(self, seed: int) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("HYDRA_FULL_ERROR", None)
        log = self.tmp_path / f"search-{seed}-{len(self.logs.setdefault(seed, []))}.log"
        self.logs[seed].append(log)
        with open(log, "wb") as out:
            self.procs[seed] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *self.args(seed)], cwd=self.tmp_path, env=env,
                                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def assert_running(self) -> None:
        """Fails the test at once when a search has ended (before the kills none may)."""
        ended = {seed: proc.returncode for seed, proc in self.procs.items() if proc.poll() is not None}
        assert not ended, {seed: (code, self.output(seed)[-2000:]) for seed, code in ended.items()}

    def kill(self, seed: int) -> None:
        os.killpg(self.procs[seed].pid, signal.SIGKILL)
        self.procs[seed].wait(timeout=60)

    def wait(self, timeout: float) -> Dict[int, int]:
        deadline = time.monotonic() + timeout
        return {seed: proc.wait(timeout=max(1.0, deadline - time.monotonic())) for seed, proc in self.procs.items()}

    def output(self, seed: int) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs[seed])

    def stop_all(self) -> None:
        for seed, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(seed)


def _parents(runs: list) -> Dict[str, object]:
    """Each search's parent run, by its seed."""
    return {r.data.params.get("seed"): r for r in runs if "mlflow.parentRunId" not in r.data.tags}


def _trials(runs: list, parent_id: str, status: Optional[str] = None) -> list:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id and "tuner.trial_id" in r.data.tags
            and (status is None or r.info.status == status)]


def _all_mid_search(url: str, searches: Searches) -> bool:
    searches.assert_running()
    runs = runs_in(url)
    parents = _parents(runs)
    return len(parents) == SEARCHES and all(_trials(runs, p.info.run_id) for p in parents.values())


def _one_mid_trial(url: str, searches: Searches) -> Optional[tuple]:
    """A search with a trial FINISHED and the next one RUNNING: (seed, parent run id)."""
    searches.assert_running()
    runs = runs_in(url)
    for seed, parent in sorted(_parents(runs).items()):
        if _trials(runs, parent.info.run_id, "FINISHED") and _trials(runs, parent.info.run_id, "RUNNING"):
            return int(seed), parent.info.run_id
    return None


def _assert_predicts(model) -> None:
    out = model.predict(pd.DataFrame({"text": ["a great superb film", "an awful dreadful film"]}))
    assert set(out["label"]) <= {"positive", "negative"}
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in out["probabilities"])


def test_four_searches_on_postgresql_ride_through_a_server_restart_and_a_sigkill(tmp_path: Path, pg_server: MlflowServer) -> None:
    searches = Searches(tmp_path, pg_server.url)
    began = time.monotonic()
    try:
        for seed in range(1, SEARCHES + 1):
            searches.start(seed)

        # the server killed, group and all, while every search is mid-search; back on the same port
        wait_for(lambda: _all_mid_search(pg_server.url, searches), 600, "a trial run in every search")
        searches.assert_running()
        down = time.monotonic()
        pg_server.stop(sig=signal.SIGKILL)
        time.sleep(3)
        pg_server.start()
        outage = time.monotonic() - down

        # one search killed with SIGKILL mid-trial, and the same command again
        seed, parent_id = wait_for(lambda: _one_mid_trial(pg_server.url, searches), 600, "a search mid-trial")
        searches.kill(seed)
        cut = [r.info.run_id for r in _trials(runs_in(pg_server.url), parent_id, "RUNNING")]
        assert cut, "the kill landed between two trials"  # the store's record of the trial it cut off
        searches.start(seed)

        codes = searches.wait(timeout=1800)
        assert codes == {s: 0 for s in range(1, SEARCHES + 1)}, {s: searches.output(s)[-3000:] for s, c in codes.items() if c}
    finally:
        searches.stop_all()
    took = time.monotonic() - began
    assert "resuming search" in searches.output(seed)

    client = MlflowClient(pg_server.url)
    runs = runs_in(pg_server.url)
    assert not [(r.info.run_name, r.info.status) for r in runs if r.info.status == "RUNNING"]
    parents = _parents(runs)
    assert sorted(parents) == [str(s) for s in range(1, SEARCHES + 1)]
    for parent in parents.values():
        finished = Counter(r.data.tags["tuner.trial_id"] for r in _trials(runs, parent.info.run_id, "FINISHED"))
        assert len(finished) == TRIALS and set(finished.values()) == {1}, (parent.data.params["seed"], finished)
        assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == TRIALS
    assert [client.get_run(run_id).info.status for run_id in cut] == ["KILLED"]  # the cut-off trial's run, closed on resume
    # the PostgreSQL database holds what the server answers
    assert sorted(r.info.run_id for r in runs_in(pg_server.store_uri)) == sorted(r.info.run_id for r in runs)

    # every registered version and every logged model loads through the server and predicts
    mlflow.set_tracking_uri(pg_server.url)
    versions = client.search_model_versions("name='concurrent'")
    assert len(versions) == SEARCHES
    for version in versions:
        _assert_predicts(mlflow.pyfunc.load_model(f"models:/concurrent/{version.version}"))
    logged = client.search_logged_models(experiment_ids=sorted({p.info.experiment_id for p in parents.values()}))
    assert len(logged) >= SEARCHES and {m.status for m in logged} == {"READY"}, [(m.model_id, m.status) for m in logged]
    for model in logged:
        _assert_predicts(mlflow.pyfunc.load_model(f"models:/{model.model_id}"))
    print(f"{SEARCHES} searches x {TRIALS} trials on PostgreSQL: server down {outage:.0f} s, search {seed} killed mid-trial "
          f"and resumed; {len(runs)} runs, {len(logged)} logged models; {took:.0f} s")
