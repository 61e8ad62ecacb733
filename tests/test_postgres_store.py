"""PostgreSQL behind a real `mlflow server`: a throwaway cluster on 127.0.0.1
(tests/postgres_cluster.py), artifacts served from a local directory, a `pipeline train` recorded
through it whole and its model loaded back. Four searches at once on it, one killed and resumed,
the server restarted: tests/stress/test_postgres_searches.py."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import SHRINK, MlflowServer, run_cli, runs_in, write_sentiment_csv

EPOCHS = 2


@pytest.mark.parametrize("pg_server", [False], ids=["server-without-job-runner"], indirect=True)  # starts in half the time
def test_a_train_run_through_a_server_over_postgresql_is_recorded_whole_and_its_model_loads(tmp_path: Path, pg_server: MlflowServer) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=200)
    result = run_cli(["train", *SHRINK, "dataset=files", f"dataset.path={data}", f"training.epochs={EPOCHS}",
                      "training.early_stopping.enabled=false", f"tracking.uri={pg_server.url}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    # the same run through the server and straight from the PostgreSQL database behind it
    assert pg_server.store_uri.startswith("postgresql+psycopg://")
    # the store check before a run lets the driver connect as it is told: here by `?port=` (a check
    # of the URI's host on PostgreSQL's default port refused it, a helper's review found)
    from omegaconf import OmegaConf
    from sqlalchemy.engine import make_url

    from pipeline import tracking

    url = make_url(pg_server.store_uri)
    by_query = url.set(port=None).update_query_dict({"port": str(url.port)}).render_as_string(hide_password=False)
    assert "?port=" in by_query
    tracking.check_store(OmegaConf.create({"uri": by_query, "connect_timeout": 5.0}))
    for uri in (pg_server.url, pg_server.store_uri):
        (run,) = runs_in(uri)
        assert run.info.status == "FINISHED" and run.info.run_id in result.stdout
        assert run.data.tags["dataset"] == "files-reviews" and run.data.params["training.epochs"] == str(EPOCHS)
        assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(EPOCHS))
    # its artifacts in the server's local destination, the model among them
    assert list((pg_server.root / "artifacts").rglob("MLmodel")) and list((pg_server.root / "artifacts").rglob("resolved_config.yaml"))

    mlflow.set_tracking_uri(pg_server.url)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = model.predict(pd.DataFrame({"text": ["a great superb film", "an awful dreadful film"]}))
    assert set(out["label"]) <= {"positive", "negative"}
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in out["probabilities"])
