"""`pipeline train -m`: a sweep is one MLflow parent run with a child per job, and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import SHRINK, curve, run_cli, runs_in
from pipeline import train

SWEEP = ["train", "-m", *SHRINK, "dataset.max_samples=200", "seed=1,2,3,4"]


def _sweep_runs(store_uri: str):
    runs = runs_in(store_uri)
    parents = [r for r in runs if "sweep.id" in r.data.tags]
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, jobs


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes (a sweep: tests/test_train_e2e.py)
def test_a_killed_sweep_resumes_into_the_same_parent_without_running_a_job_twice(tmp_path: Path, store_uri: str) -> None:
    exe = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "pipeline"
    cmd = [str(exe)] if exe.exists() else ["pipeline"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("HYDRA_FULL_ERROR", None)
    first = subprocess.Popen([*cmd, *SWEEP], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    seen = []
    try:  # killed as Hydra launches the third job
        for line in first.stdout:
            seen.append(line)
            if "#2 : " in line:
                break
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert any("#2 : " in line for line in seen), "".join(seen)[-3000:]
    parents, jobs = _sweep_runs(store_uri)
    done_before = {j.info.run_id: j.data.params["seed"] for j in jobs if j.info.status == "FINISHED"}
    assert len(parents) == 1 and parents[0].info.status == "RUNNING" and sorted(done_before.values()) == ["1", "2"]

    again = run_cli(SWEEP, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    parents, jobs = _sweep_runs(store_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    finished = [j for j in jobs if j.info.status == "FINISHED"]
    assert sorted(j.data.params["seed"] for j in finished) == ["1", "2", "3", "4"]  # each job once
    assert {j.info.run_id for j in finished} >= set(done_before)  # the finished ones were not run again
    assert all(j.data.tags["mlflow.parentRunId"] == parent.info.run_id for j in jobs)
    assert all(j.info.status in ("FINISHED", "KILLED") for j in jobs)  # a job cut off is marked KILLED
    assert again.stdout.count("FINISHED before; not run again") == len(done_before)
    assert parent.data.params["sweep.overrides"] == "+debug=fast dataset.max_samples=200 seed=1,2,3,4"
    assert parent.data.metrics["sweep.jobs"] == 4 and Path(parent.data.tags["sweep.dir"]).is_dir()

    ranked = run_cli(["compare", parent.info.run_id, "--no-log"], cwd=tmp_path)
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    assert sum(f"bbc_news-lstm-s{s}" in ranked.stdout for s in (1, 2, 3, 4)) == 4


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_jobs_in_other_processes_join_the_sweep(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(["train", "-m", "hydra/launcher=submitit_local", *SHRINK, "dataset.max_samples=200", "seed=1,2"],
                     cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    parents, jobs = _sweep_runs(store_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted((j.data.params["seed"], j.info.status) for j in jobs) == [("1", "FINISHED"), ("2", "FINISHED")]
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parents[0].info.run_id}


def test_the_objective_a_sweeper_sees_is_the_validation_metric_named_in_the_config(make_cfg, store_uri: str) -> None:
    cfg = make_cfg("dataset.max_samples=200", "training.epochs=2", "training.objective=val_loss")
    value = train.run(cfg)
    (run,) = runs_in(store_uri)
    history = curve(MlflowClient(store_uri), run.info.run_id, "val_loss")
    assert value == pytest.approx(min(history)) and value != pytest.approx(run.data.metrics["test_loss"])


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_an_optuna_sweep_optimises_the_validation_objective_as_one_parent(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.direction=maximize",
                      "hydra.sweeper.sampler.seed=1", "training.learning_rate=interval(0.001,0.01)", *SHRINK,
                      "dataset.max_samples=200", "training.epochs=2"], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    parents, jobs = _sweep_runs(store_uri)
    assert len(parents) == 1 and parents[0].data.params["sweep.sweeper"].endswith("OptunaSweeper")
    assert len(jobs) == 3 and all(j.info.status == "FINISHED" for j in jobs)
    # what Optuna was told is each job's best validation accuracy, not its test accuracy
    client = MlflowClient(store_uri)
    best_val = {j.data.params["training.learning_rate"]: max(m.value for m in client.get_metric_history(j.info.run_id, "val_accuracy"))
                for j in jobs}
    reported = (tmp_path / "multirun").glob("*/*/optimization_results.yaml")
    import yaml

    (results,) = [yaml.safe_load(p.read_text()) for p in reported]
    assert results["best_value"] == pytest.approx(max(best_val.values()))
    assert str(results["best_params"]["training.learning_rate"]) in best_val
