"""Shared fixtures: the real configs, shrunk; a fresh MLflow store per test; no leaked runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.config import CONF_DIR, register_configs  # noqa: E402

REPO = CONF_DIR.parent
#: The experiment every run goes to unless ``tracking.experiment_name`` says otherwise.
EXPERIMENT = "lstm-text-classification"
DATA_DIR = Path(os.environ.get("PIPELINE_DATA_DIR", REPO.parent / "shared" / "data"))

#: Small enough for seconds per run, big enough to exercise every code path: conf/debug/fast.yaml,
#: which users run too.
SHRINK = ["+debug=fast"]
#: The shared small search space (conf/search_space/tiny.yaml): six models, each trial scored on
#: the validation split (folds, on by default for data this small, have their own tests).
SPACE = ["search_space=tiny", "tuner.cv_folds=1"]

register_configs()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test runs in its own directory, so `mlruns/` and `outputs/` are fresh, and must
    leave no MLflow run active behind it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(DATA_DIR))
    # the store a test names, not the one a shell (or an earlier set_tracking_uri) exported
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    yield
    import mlflow

    assert mlflow.active_run() is None, "a test leaked an active MLflow run"
    mlflow.set_tracking_uri(None)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the real config with shrinking overrides and a store under ``tmp_path``."""

    def _make(*overrides: str, config_name: str = "config") -> DictConfig:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name,
                overrides=[*SHRINK, f"paths.mlruns_dir={tmp_path / 'mlruns'}", *(o for o in overrides if o not in SHRINK)],
            )

    return _make


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


#: What the console script sets for itself where the user has not (pipeline/quiet.py, cli.py).
CLI_OWN_ENV = ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL", "PIPELINE_TF_LOGS", "HYDRA_FULL_ERROR")


def run_cli(args: List[str], cwd: Path, timeout: int = 300, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """The real console script, as a user runs it: with its own defaults for what TensorFlow and
    MLflow print (not this process's, nor a ``--verbose`` an in-process call left behind)."""
    inherited = {k: v for k, v in os.environ.items() if k not in CLI_OWN_ENV}
    full_env = {**inherited, **(env or {})}
    exe = Path(sys.executable).with_name("pipeline")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def runs_in(store_uri: str, experiment: str = EXPERIMENT) -> list:
    """Every run of ``experiment`` in the store, newest first (none when the experiment is not there)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=5000) if found else []


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def write_sentiment_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A small, clearly learnable two-class CSV: positive and negative cue words in filler."""
    import random

    rng = random.Random(seed)
    pos = ["good", "great", "superb", "lovely", "delightful", "excellent"]
    neg = ["bad", "awful", "dreadful", "boring", "terrible", "poor"]
    filler = ["the", "film", "plot", "was", "acting", "story", "really", "quite", "and", "a", "music", "ending"]
    rows = ["text,label"]
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        cues = pos if label == "positive" else neg
        words = [rng.choice(filler) for _ in range(rng.randint(4, 10))]
        for _ in range(2):
            words.insert(rng.randint(0, len(words)), rng.choice(cues))
        rows.append(f"{' '.join(words)} #{i},{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


class MlflowServer:
    """A real `mlflow server` on a loopback port, SQLite behind it, that a test can stop and
    start again (same port, same store)."""

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "MlflowServer":
        import time
        import urllib.request

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", self.store_uri, "--artifacts-destination", str(self.root / "artifacts")],
            cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()  # or its process group outlives the test (a loaded machine: slow to start)
                    raise RuntimeError("mlflow server did not start")
                time.sleep(0.3)

    def stop(self, sig: int = 15) -> None:
        """Stop the server and its helper processes (huey consumers): the whole group."""
        import signal

        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:  # the whole group has exited already
            self.proc = None
            return
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture
def server(tmp_path: Path):
    """A started :class:`MlflowServer`; stopped after the test."""
    srv = MlflowServer(tmp_path / "server").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mlflow_server(server: MlflowServer) -> str:
    """The URL of a real `mlflow server`."""
    return server.url


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line holding every fragment; returns it.

    (A library's warning may also be on stderr; TensorFlow's and MLflow's start-up lines are not:
    tests/test_bad_input.py.)
    """
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-1500:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
