"""Shared fixtures: the real configs, shrunk; a fresh MLflow store per test; no leaked runs."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

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
#: One final model (the default averages three refits: the tests named for the ensemble cover it).
SPACE = ["search_space=tiny", "tuner.cv_folds=1", "tuner.final.ensemble.seeds=[]"]

register_configs()

#: A RAM-backed file system for the tests' directories, where the machine has one with room.
TMPFS = Path("/dev/shm")


def pytest_configure(config: pytest.Config) -> None:
    """Test directories (and every temporary file of the jobs the tests start) on ``/dev/shm``
    when ``TMPDIR`` and ``--basetemp`` leave the choice to us: nearly every test writes a SQLite
    store, and each of SQLite's commits waits for an fsync on disk (a new store took 11 s there,
    4 s on tmpfs, with the machine busy). What the tests check does not depend on the disk; a
    full disk has its own tests (a file-size limit, not a small file system)."""
    if os.environ.get("TMPDIR") or config.option.basetemp or not TMPFS.is_dir() or not os.access(TMPFS, os.W_OK):
        return
    if shutil.disk_usage(TMPFS).free < 4 * 2**30:
        return
    os.environ["TMPDIR"] = str(TMPFS)  # inherited by xdist's workers and every subprocess
    tempfile.tempdir = None  # recomputed from TMPDIR on next use


@functools.lru_cache(maxsize=None)
def _empty_store_template() -> Path:
    """An empty MLflow SQLite store, created by MLflow once per test process. Creating one runs
    MLflow's schema migrations (5-15 s on 2 cores); nearly every test needs a new store."""
    from mlflow.tracking import MlflowClient

    root = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, root, True)
    db = root / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


def seed_store(db: Path, default_artifact_location: str) -> None:
    """A new, empty store at ``db``: what MLflow would create there (the same schema, one
    ``Default`` experiment whose artifacts go to ``default_artifact_location``), copied from
    :func:`_empty_store_template` instead of migrated again."""
    import sqlite3

    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store_template(), db)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (default_artifact_location,))


_frozen_at_modules = 0


@pytest.fixture(autouse=True)
def _imports_frozen(request: pytest.FixtureRequest) -> None:
    """This test process's imports (TensorFlow's, Keras's, MLflow's: hundreds of thousands of
    objects) out of Python's full collections, as a command's are (pipeline/heap.py): Keras and Keras
    Tuner collect before every model, and the tests that train in this process paid for walking
    them each time. Frozen again (garbage collected first) whenever a test has imported more;
    tests/test_heap.py, which tests the command's own freezing, starts with none frozen."""
    import gc

    global _frozen_at_modules
    if request.node.get_closest_marker("heap_as_found") is not None:
        gc.unfreeze()
        _frozen_at_modules = 0
        return
    if len(sys.modules) > _frozen_at_modules:
        gc.collect()
        gc.freeze()
        _frozen_at_modules = len(sys.modules)


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test runs in its own directory, so `mlruns/` and `outputs/` are fresh, and must
    leave no MLflow run active behind it. The directory's default store, `mlruns/mlflow.db`, is
    there already, new and empty (:func:`seed_store`), unless the test is marked ``no_store``
    (a test that a command creates a store, or leaves none)."""
    if request.node.get_closest_marker("no_store") is None:
        seed_store(tmp_path / "mlruns" / "mlflow.db", str(tmp_path / "mlruns" / "0"))
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


def curve(client: Any, run_id: str, key: str) -> List[float]:
    """A metric's values on a run, in step order (the UI's chart; MLflow's history is unordered)."""
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """This process's file size limit (``ulimit -f``, soft) at ``limit`` bytes for a block: a write
    past it fails with EFBIG, as on a full disk (Python ignores SIGXFSZ, which would kill it)."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


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


def concurrent_search(data: Path, seed: int, trials: int, *extra: str) -> List[str]:
    """`pipeline tune` arguments for one of several tiny searches at once over ``data``
    (tests/stress): each its own seed, so its own tuner project; every final model registered as
    `concurrent`."""
    return ["tune", *SHRINK, "dataset=files", f"dataset.path={data}", f"seed={seed}", f"tuner.max_trials={trials}",
            "training.epochs=2", "tuner.final.registered_model_name=concurrent", "tuner.cv_folds=1", "tuner.final.ensemble.seeds=[]",
            "search_space.model.units={type:int,min:8,max:32,step:8}", *extra]


class MlflowServer:
    """A real `mlflow server` on a loopback port, SQLite behind it (or ``backend_store_uri``), its
    artifacts served from a local directory, that a test can stop and start again (same port,
    same store). ``jobs=False`` starts it without MLflow's job runner (eight more Python processes,
    for GenAI jobs the pipeline never starts): half the start-up time."""

    def __init__(self, root: Path, backend_store_uri: Optional[str] = None, jobs: bool = True) -> None:
        from postgres_cluster import free_port

        self.jobs = jobs
        self.port = free_port()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.proc: Optional[subprocess.Popen] = None
        if backend_store_uri is None and not (root / "mlflow.db").exists():  # as `mlflow server --artifacts-destination` creates it
            seed_store(root / "mlflow.db", "mlflow-artifacts:/0")

    def start(self) -> "MlflowServer":
        import time
        import urllib.request

        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", self.store_uri, "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")],
                cwd=self.root, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                env={**os.environ, **({} if self.jobs else {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})},
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.root / "server.log").read_text(errors="replace")
                    raise RuntimeError(f"mlflow server did not start: {log[-2000:]}")
                time.sleep(0.3)

    def stop(self, sig: int = 15) -> None:
        """Stop the server and its helper processes (huey consumers): the whole group, and
        SIGKILL to whatever of it is left."""
        import signal

        if self.proc is None:
            return
        for signum in (sig, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:  # the group is gone already
                break
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture
def server(tmp_path: Path):
    """A started :class:`MlflowServer` (without MLflow's job runner, which the pipeline never
    uses: half the start-up); stopped after the test."""
    srv = MlflowServer(tmp_path / "server", jobs=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mlflow_server(server: MlflowServer) -> str:
    """The URL of a real `mlflow server`."""
    return server.url


@pytest.fixture
def postgres_uri():
    """A database in a throwaway PostgreSQL cluster (tests/postgres_cluster.py), as an SQLAlchemy
    URI; the cluster stopped and deleted after the test, whatever happened."""
    from postgres_cluster import PostgresCluster

    cluster = PostgresCluster().start()
    try:
        yield cluster.uri("mlflow")
    finally:
        cluster.stop()


@pytest.fixture
def pg_server(tmp_path: Path, postgres_uri: str, request: pytest.FixtureRequest):
    """A started :class:`MlflowServer` over PostgreSQL, artifacts in a local directory; stopped
    after the test (before its cluster). Indirect parameter: ``jobs`` (default True)."""
    srv = MlflowServer(tmp_path / "server", backend_store_uri=postgres_uri, jobs=getattr(request, "param", True)).start()
    try:
        yield srv
    finally:
        srv.stop()


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
