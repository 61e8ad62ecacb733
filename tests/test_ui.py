"""The MLflow UI, for real: a search logged to a real `mlflow server`, read in headless Chromium."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path


from conftest import SHRINK, SPACE, run_cli, runs_in, write_sentiment_csv

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "run tests/install-browser.sh first"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1600,1200"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _page_text(driver, url: str, until: list, timeout: float = 60) -> str:
    """The page's visible text once every string in ``until`` is on it (the UI renders late)."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    while True:
        text = driver.find_element("tag name", "body").text
        if all(s in text for s in until) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def client_experiment_kind(uri: str, experiment_id: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(uri).get_experiment(experiment_id).tags.get("mlflow.experimentKind", "")


def test_the_ui_lists_a_search_and_compares_its_trials(tmp_path: Path, mlflow_server: str) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    search = run_cli(
        ["tune", *SHRINK, *SPACE, "dataset=files", f"dataset.path={data}", "training.epochs=2", "tuner.max_trials=2",
         "tracking.log_model=false", f"tracking.uri={mlflow_server}"],
        cwd=tmp_path,
    )
    assert search.returncode == 0, search.stderr[-3000:]
    runs = runs_in(mlflow_server)
    parent = next(r for r in runs if r.data.tags.get("pipeline.command") == "tune")
    experiment_id = parent.info.experiment_id
    trials = [r for r in runs if "tuner.trial_id" in r.data.tags]
    assert len(trials) == 2

    assert client_experiment_kind(mlflow_server, experiment_id) == "custom_model_development"
    printed = search.stdout.strip().splitlines()[-1].split("UI: open ")[1]

    driver = _browser()
    try:
        # the link the search printed opens its run in the "Model training" view
        page = _page_text(driver, printed, [parent.info.run_name, "Model registry"])
        assert parent.info.run_name in page and "Model registry" in page, page[:2000]  # that view's sidebar
        assert "workflowType=machine_learning" in driver.current_url
        # the experiment's runs, each with its datasets (train, validation, test) in the Dataset column
        dataset = f"{parent.data.tags['dataset']}-train ({parent.data.tags['data_fingerprint.train'][:16]})"
        listing = _page_text(driver, f"{mlflow_server}/#/experiments/{experiment_id}?workflowType=machine_learning",
                             [parent.info.run_name, "Dataset", dataset])
        assert parent.info.run_name in listing and dataset in listing, listing[:2000]
        driver.save_screenshot(str(tmp_path / "experiment.png"))

        # the compare view of the two trials shows their val_accuracy, as the store has it
        ids = urllib.parse.quote(json.dumps([t.info.run_id for t in trials]))
        experiments = urllib.parse.quote(json.dumps([experiment_id]))
        names = [t.info.run_name for t in trials]
        compare = _page_text(driver, f"{mlflow_server}/#/compare-runs?runs={ids}&experiments={experiments}", ["val_accuracy", *names])
        driver.save_screenshot(str(tmp_path / "compare.png"))
    finally:
        driver.quit()
    assert all(name in compare for name in names), compare[:2000]
    metrics = compare[compare.index("val_accuracy"):]
    for trial in trials:
        assert f"{trial.data.metrics['val_accuracy']:.3f}".rstrip("0") in metrics, (trial.data.metrics, metrics[:800])
    for shot in ("experiment.png", "compare.png"):
        assert (tmp_path / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / shot).stat().st_size > 20_000
