"""MLflow's environment variables: the store and the registry a user's shell names are the ones used."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import SHRINK, SPACE, assert_one_line_error, run_cli, runs_in, write_sentiment_csv


@pytest.mark.no_store  # asserts what the command leaves in an empty directory
def test_mlflow_tracking_uri_names_the_store_and_the_command_line_wins(tmp_path: Path, store_uri: str) -> None:
    # (a command writing to the store MLFLOW_TRACKING_URI names: test_mlflow_registry_uri_holds_the_registered_model_and_predict_finds_it)
    elsewhere = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    (tmp_path / "team").mkdir()
    env = {"MLFLOW_TRACKING_URI": elsewhere}
    by_flag = run_cli(["train", *SHRINK, "dataset.max_samples=200", f"tracking.uri={store_uri}", "tracking.log_model=false"],
                      cwd=tmp_path, env=env)
    assert by_flag.returncode == 0, by_flag.stderr[-2000:]
    assert len(runs_in(store_uri)) == 1 and runs_in(elsewhere) == []
    assert store_uri in by_flag.stdout and elsewhere not in by_flag.stdout

    # set but empty is unset (as MLflow reads it): the default store here, which holds the run above
    listed = run_cli(["compare"], cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert runs_in(store_uri)[0].info.run_id[:8] in listed.stdout
    assert_one_line_error(run_cli(["train", *SHRINK, "tracking.uri="], cwd=tmp_path), "tracking.uri is empty")


@pytest.mark.no_store  # asserts what the command leaves in an empty directory
def test_mlflow_registry_uri_holds_the_registered_model_and_predict_finds_it(tmp_path: Path) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=160)
    tracking_uri = f"sqlite:///{tmp_path / 'runs.db'}"
    registry_uri = f"sqlite:///{tmp_path / 'registry.db'}"
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": registry_uri}
    result = run_cli(["tune", *SHRINK, *SPACE, "tuner.max_trials=1", "tuner.final.refit=false", "baseline.enabled=false", "dataset=files",
                      f"dataset.path={data}", "tuner.final.registered_model_name=reviews"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {r.info.status for r in runs_in(tracking_uri)} == {"FINISHED"}
    assert tracking_uri in result.stdout  # the last line's UI command opens that store
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    assert [str(v.version) for v in MlflowClient(tracking_uri, registry_uri).search_model_versions("name='reviews'")] == ["1"]
    assert "registered reviews v1" in result.stdout  # said once, on the last line: not MLflow's two lines on stderr
    assert "Successfully registered model" not in result.stderr and "Created version" not in result.stderr, result.stderr[-2000:]
    assert MlflowClient(tracking_uri, tracking_uri).search_registered_models() == []

    predicted = run_cli(["predict", "reviews", "a wonderful film"], cwd=tmp_path, env=env)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.strip()


@pytest.mark.stress  # with -m stress, to keep the default suite within 15 minutes (a sweep's jobs: tests/test_train_e2e.py; MLFLOW_TRACKING_URI: test_mlflow_tracking_uri_names_the_store_and_the_command_line_wins)
def test_every_job_of_a_sweep_writes_to_the_same_store(tmp_path: Path, store_uri: str) -> None:
    """MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI to the process: a job that left it set
    sent the next job of a sweep (same process, basic launcher) to MLflow's default store."""
    result = run_cli(["train", "-m", *SHRINK, "dataset.max_samples=200", "seed=1,2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(r.data.params["seed"] for r in runs_in(store_uri) if "sweep.id" not in r.data.tags) == ["1", "2"]
    assert not (tmp_path / "mlflow.db").exists()


def test_the_registration_lines_are_kept_back_and_anything_else_passes_at_once() -> None:
    import io

    from pipeline.tracking.models import _WithoutRegistryLines

    out = io.StringIO()
    stderr = _WithoutRegistryLines(out)
    stderr.write("Successfully registered model 'reviews'.\nWaiting up to 300 seconds for model version")
    stderr.write(" to finish creation.\n")
    assert out.getvalue() == "Waiting up to 300 seconds for model version to finish creation.\n"  # as it comes, not at the end
    stderr.write("Registered model \"it's\" already exists. Creating a new version of this model...\n")  # repr's other quotes
    stderr.write("Created version '2' of model \"it's\".\nsomething else\npartial")
    stderr.close_out()
    assert out.getvalue() == "Waiting up to 300 seconds for model version to finish creation.\nsomething else\npartial"
