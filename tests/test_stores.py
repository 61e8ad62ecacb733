"""Servers, stores and loading: a tracking URI with credentials, a server that is not MLflow, a SQLite
path that cannot be a store, reading commands that create no store, and a model whose MLmodel points
outside its directory."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
import yaml
from mlflow import MlflowClient

from conftest import SHRINK, MlflowServer, assert_one_line_error, run_cli, runs_in, write_sentiment_csv
from pipeline import tracking
from pipeline.errors import TrackingError

PASSWORD = "Op3n-S3same-42"


# --- servers ---------------------------------------------------------------------------------


@contextmanager
def _http_server(answer: Callable[[BaseHTTPRequestHandler], Tuple[int, bytes]]) -> Iterator[Tuple[str, List[dict]]]:
    """A real HTTP server on a loopback port, in a thread; yields its URL and the headers of every
    request it got."""
    seen: List[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append({"path": self.path, **dict(self.headers)})
            status, body = answer(self)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _mlflow_like(user: str, password: str) -> Callable[[BaseHTTPRequestHandler], Tuple[int, bytes]]:
    """What an MLflow server behind basic auth answers the preflight's two requests."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def answer(handler: BaseHTTPRequestHandler) -> Tuple[int, bytes]:
        if handler.headers.get("Authorization") != expected:
            return 401, b"You are not authenticated."
        if handler.path == "/health":
            return 200, b"OK"
        if handler.path.startswith("/api/2.0/mlflow/experiments/search"):
            return 200, json.dumps({"experiments": []}).encode()
        return 404, b"{}"

    return answer


@pytest.mark.parametrize("given", ["in the URI", "percent-encoded in the URI", "in MLFLOW_TRACKING_USERNAME/PASSWORD"])
def test_the_health_check_sends_credentials_as_basic_auth(make_cfg, monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    password = "p@ss:w/rd" if given.startswith("percent") else PASSWORD
    with _http_server(_mlflow_like("alice", password)) as (url, seen):
        if given == "in the URI":
            uri = url.replace("http://", f"http://alice:{PASSWORD}@")
        elif given.startswith("percent"):
            uri = url.replace("http://", "http://alice:p%40ss%3Aw%2Frd@")
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            uri = url
        assert tracking.check_server(make_cfg(f"tracking.uri={uri}").tracking) is True
    assert [r["path"] for r in seen][:1] == ["/health"] and len(seen) == 2, seen  # then one MLflow REST call
    assert all(r["Host"] == url.removeprefix("http://") for r in seen)


def test_wrong_credentials_are_told_in_one_line_without_the_password(make_cfg) -> None:
    with _http_server(_mlflow_like("alice", "the-right-one")) as (url, _):
        uri = url.replace("http://", f"http://alice:{PASSWORD}@")
        with pytest.raises(TrackingError, match="refused the credentials") as refused:
            tracking.check_server(make_cfg(f"tracking.uri={uri}").tracking)
    assert PASSWORD not in str(refused.value) and "alice:***@" in str(refused.value)


def _no_password_in(root: Path) -> None:
    stored = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in stored)
    leaked = [str(p.relative_to(root)) for p in stored if PASSWORD.encode() in p.read_bytes()]
    assert not leaked, f"the password is in the store: {leaked}"


def test_a_run_and_its_model_go_through_a_real_server_by_a_uri_with_credentials(
    tmp_path: Path, server: MlflowServer, make_cfg, capfd: pytest.CaptureFixture
) -> None:
    """`mlflow server` without its auth app takes any Authorization header; the run, its params, its
    model upload (mlflow-artifacts) and loading the model back all go through the URI with credentials."""
    import pandas as pd

    from test_reliability import _tiny_text_model

    uri = server.url.replace("http://", f"http://alice:{PASSWORD}@")
    cfg = make_cfg(f"tracking.uri={uri}")
    tracking.preflight(cfg.tracking)
    keras_model = _tiny_text_model(tmp_path / "m.keras")
    with tracking.tracked_run(cfg.tracking, "credentials", {"pipeline.command": "train"}):
        tracking.log_params({"tracking.uri": uri})
        tracking.log_text_model(keras_model, ["neg", "pos"], ["mlflow"], ["a good film"])
    (run,) = runs_in(server.store_uri)
    assert run.info.status == "FINISHED" and run.data.params["tracking.uri"] == server.url.replace("http://", "http://alice:***@")
    predictions = tracking.load_text_model(uri, run.info.run_id).predict(pd.DataFrame({"text": ["a good film", "bad"]}))
    assert set(predictions["label"]) <= {"neg", "pos"} and len(predictions) == 2
    printed = capfd.readouterr()
    assert PASSWORD not in printed.out + printed.err  # MLflow prints a link to each run, with the URI's password
    _no_password_in(server.root)


@pytest.mark.stress
def test_a_tracking_uri_with_credentials_trains_against_a_real_server(tmp_path: Path, server: MlflowServer) -> None:
    uri = server.url.replace("http://", f"http://alice:{PASSWORD}@")
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=160)
    result = run_cli(["train", *SHRINK, "dataset=files", f"dataset.path={data}", f"tracking.uri={uri}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_in(server.store_uri)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert PASSWORD not in result.stdout + result.stderr and "alice:***@" in result.stdout
    _no_password_in(server.root)


@pytest.mark.no_store  # asserts what the command leaves in the directory
@pytest.mark.parametrize("status, body", [(200, b"OK"), (404, b"<h1>Not Found</h1>")], ids=["200 to everything", "404 to everything"])
def test_a_server_that_is_not_mlflow_is_refused_before_any_data_is_read(tmp_path: Path, status: int, body: bytes) -> None:
    with _http_server(lambda handler: (status, body)) as (url, seen):
        result = run_cli(["train", *SHRINK, f"tracking.uri={url}"], cwd=tmp_path)
    assert_one_line_error(result, url, "not an MLflow tracking server")
    assert "Epoch" not in result.stdout and list(tmp_path.iterdir()) == []  # no store, no outputs/
    assert seen, "the server was never asked"


# --- SQLite paths that cannot be a store -------------------------------------------------------


@pytest.mark.no_store  # asserts what the command leaves in the directory
def test_a_directory_as_the_sqlite_store_fails_at_once_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "somedir").mkdir()
    result = run_cli(["train", *SHRINK, f"tracking.uri=sqlite:///{tmp_path / 'somedir'}"], cwd=tmp_path)
    line = assert_one_line_error(result, "names a directory", str(tmp_path / "somedir"), "mlflow.db")
    assert result.stderr.splitlines() == [line], result.stderr[-3000:]  # no retried warnings before it
    # nothing made, not even Hydra's outputs/ (the store is checked before the job's directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somedir"] and not any((tmp_path / "somedir").iterdir())


@pytest.mark.no_store  # asserts what the command leaves in the directory
@pytest.mark.parametrize("args, fragments", [
    (["train", "tracking.uri=http://127.0.0.1:1"], ["MLflow tracking server http://127.0.0.1:1 is unreachable"]),
    (["train", "-m", "seed=1,2", "tracking.uri=http://127.0.0.1:1"], ["MLflow tracking server http://127.0.0.1:1 is unreachable"]),
    # MLflow's engine retried for about 100 s, with nine warnings of four lines, then left outputs/
    (["train", "tracking.uri=postgresql://bob:Hunter2SecretXYZ@127.0.0.1:1/db"],
     ["cannot use MLflow tracking store postgresql://bob:***@127.0.0.1:1/db", "Connection refused"]),
    (["tune", "tracking.uri=postgresql+psycopg://bob@127.0.0.1:1/db", "tracking.connect_timeout=2"],
     ["cannot use MLflow tracking store postgresql+psycopg://bob@127.0.0.1:1/db", "Connection refused"]),
    # a host name the socket library cannot encode: a traceback, after outputs/ (a helper's review)
    (["train", "tracking.uri=postgresql://bob:Hunter2SecretXYZ@db..example.com/mlflow"],
     ["cannot use MLflow tracking store postgresql://bob:***@db..example.com/mlflow"]),
    # a store in memory: the run's record was gone when the command ended, its artifacts left behind
    (["train", "tracking.uri=sqlite://"], ["tracking.uri=sqlite:// is a store in memory"]),
    (["train", "tracking.uri=sqlite:///:memory:"], ["is a store in memory"]),
    # a file that is not SQLite: refused after outputs/ and a lock file beside it were made
    (["train", "tracking.uri=sqlite:///notes.db"], ["notes.db is not a SQLite database"]),
    # a path: MLflow's paragraph on its directory store's maintenance mode, after outputs/ was made
    (["train", "tracking.uri=rel.db"], ["tracking.uri=rel.db is a path", "name a SQLite store: tracking.uri=sqlite:///rel.db"]),
    (["train", "tracking.uri=file:///tmp/x/mlruns"], ["is a path", "tracking.uri=sqlite:////tmp/x/mlruns/mlflow.db"]),
], ids=["http", "http-sweep", "postgresql", "postgresql-psycopg-tune", "postgresql-bad-host", "sqlite-memory", "sqlite-memory-named", "not-sqlite",
        "a-path", "a-file-uri"])
def test_a_store_that_cannot_be_used_is_one_line_and_nothing_is_made(tmp_path: Path, args: list, fragments: list) -> None:
    (tmp_path / "notes.db").write_text("my notes\n")
    result = run_cli([args[0], *SHRINK, *args[1:]], cwd=tmp_path)
    line = assert_one_line_error(result, *fragments)
    assert result.stderr.splitlines() == [line], result.stderr[-3000:]  # no retried warnings before it
    assert "Hunter2SecretXYZ" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"] and (tmp_path / "notes.db").read_text() == "my notes\n"


def _text_file(path: Path) -> None:
    path.write_text("text,label\nnot a database,a\n")


def _other_program_database(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")


@pytest.mark.parametrize("make, message", [(_text_file, "is not a SQLite database"), (_other_program_database, "not an MLflow store")],
                         ids=["a text file", "another program's SQLite database"])
def test_a_file_that_is_not_an_mlflow_store_is_refused_and_left_as_it_was(tmp_path: Path, make_cfg, make, message: str) -> None:
    db = tmp_path / "data.db"
    make(db)
    before = db.read_bytes()
    with pytest.raises(TrackingError, match=message):
        tracking.preflight(make_cfg(f"tracking.uri=sqlite:///{db}").tracking)
    assert db.read_bytes() == before  # MLflow would have added its tables to another program's database


# --- reading commands create no store ----------------------------------------------------------


READING = {"rerun": ["rerun", "0123456789abcdef0123456789abcdef"], "compare": ["compare"], "predict": ["predict", "NAME", "a good film"]}


def test_reading_commands_in_a_directory_without_a_store_create_nothing(tmp_path: Path) -> None:
    dirs = {name: tmp_path / name for name in READING}
    for d in dirs.values():
        d.mkdir()
    with ThreadPoolExecutor(len(READING)) as pool:  # three console scripts at once: their start-up dominates
        results = dict(zip(READING, pool.map(lambda name: run_cli(READING[name], cwd=dirs[name]), READING)))
    wrong = {}
    for name, result in results.items():
        created = sorted(str(p.relative_to(dirs[name])) for p in dirs[name].rglob("*"))
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        told = len(errors) == 1 and "no MLflow store at" in errors[0] and str(dirs[name] / "mlruns" / "mlflow.db") in errors[0]
        if created or result.returncode != 2 or not told or "Traceback" in result.stderr:
            wrong[name] = (result.returncode, created, errors or result.stderr[-500:])
    assert not wrong, wrong


def test_a_single_run_checks_its_store_once_and_each_job_of_a_sweep_as_it_starts(
        tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database store's check is a connection: a single run makes it once, in the pass before
    its directory (not again as its job starts); a sweep's jobs, which may start hours after the
    sweep's pass, each check it again."""
    from pipeline import cli

    checked: List[str] = []
    real = tracking.check_store

    def counted(tracking_cfg):  # the real check, counted
        checked.append(str(tracking_cfg.uri))
        return real(tracking_cfg)

    monkeypatch.setattr(tracking, "check_store", counted)
    monkeypatch.chdir(tmp_path)
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    common = [*SHRINK, "dataset=files", f"dataset.path={data}", f"tracking.uri={store_uri}", "tracking.log_model=false"]
    assert cli.main(["train", *common, f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    assert checked == [store_uri]
    # a run refused after its store was checked (its data has one class) leaves it unchecked for the next
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the entry point set it for its own Hydra call
    (tmp_path / "one_class.csv").write_text("text,label\n" + "".join(f"text number {i},same\n" for i in range(40)))
    assert cli.main(["train", *common, f"dataset.path={tmp_path / 'one_class.csv'}", f"hydra.run.dir={tmp_path / 'refused'}"]) == 2
    assert checked == [store_uri] * 2
    checked.clear()
    assert cli.main(["train", "-m", *common, "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]) == 0
    assert checked == [store_uri] * 3  # the sweep's pass, then each of its two jobs
    assert len(runs_in(store_uri)) == 1 + 1 + 2  # the single run, the sweep's parent and its jobs


@pytest.mark.no_store  # asserts what the command leaves in the directory
@pytest.mark.parametrize("args, env, fragments", [
    # MLflow's engine retried for about 100 s, with warnings of four lines, before the line
    (["compare", "tracking.uri=postgresql://bob:Hunter2SecretXYZ@127.0.0.1:1/db"], {},
     ["cannot use MLflow tracking store postgresql://bob:***@127.0.0.1:1/db", "Connection refused"]),
    (["predict", "NAME", "tracking.uri=postgresql://bob:Hunter2SecretXYZ@127.0.0.1:1/db", "a good film"], {},
     ["cannot use MLflow tracking store postgresql://bob:***@127.0.0.1:1/db", "Connection refused"]),
    # a path: MLflow's paragraph on its directory store's maintenance mode
    (["rerun", "0123456789abcdef0123456789abcdef", "tracking.uri=./mlruns"], {},
     ["tracking.uri=./mlruns is a path", "name a SQLite store: tracking.uri=sqlite:///./mlruns/mlflow.db"]),
    # a directory store where the user allows one: reading made it (.trash, 0/meta.yaml)
    (["compare", "tracking.uri=./newstore"], {"MLFLOW_ALLOW_FILE_STORE": "true"}, ["no MLflow store at newstore"]),
    # a directory that is there, but not a store: reading made it one (.trash)
    (["compare", "tracking.uri=."], {"MLFLOW_ALLOW_FILE_STORE": "true"}, ["no MLflow store at ."]),
], ids=["compare-postgresql", "predict-postgresql", "rerun-a-path", "compare-a-new-directory-store", "compare-a-directory-not-a-store"])
def test_a_reading_command_on_a_store_it_cannot_use_is_one_line_at_once_and_makes_nothing(
        tmp_path: Path, args: list, env: dict, fragments: list) -> None:
    result = run_cli(args, cwd=tmp_path, env=env, timeout=60)
    line = assert_one_line_error(result, *fragments)
    assert result.stderr.splitlines() == [line], result.stderr[-3000:]  # no retried warnings before it
    assert "Hunter2SecretXYZ" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # not even a hidden .trash


# --- a model stays inside its directory --------------------------------------------------------


def _logged(store_uri: str, tmp_path: Path) -> Tuple[str, Path]:
    """A real raw-text model, logged and registered as ``tiny`` by the project's own code; (its run
    id, its directory in the store)."""
    import mlflow

    from test_reliability import _tiny_text_model

    (tmp_path / "mlruns").mkdir(exist_ok=True)
    keras_model = _tiny_text_model(tmp_path / "m.keras")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store_uri)
    try:
        with mlflow.start_run() as run:
            model_uri = tracking.log_text_model(keras_model, ["neg", "pos"], ["mlflow"], ["a good film"], "tiny")
    finally:
        mlflow.set_tracking_uri(previous)
    location = MlflowClient(store_uri).get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    return run.info.run_id, Path(location.removeprefix("file://"))


def _edit(model_dir: Path, change: Callable[[dict], None]) -> None:
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    change(meta)
    (model_dir / "MLmodel").write_text(yaml.safe_dump(meta))


def _label_map(meta: dict, path: str) -> None:
    meta["flavors"]["python_function"]["artifacts"]["label_map"]["path"] = path


def _predict(capsys: pytest.CaptureFixture, ref: str, store_uri: str) -> subprocess.CompletedProcess:
    from pipeline import cli

    capsys.readouterr()
    args = ["predict", ref, "a good film", f"tracking.uri={store_uri}"]
    code = cli.main(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_a_model_whose_mlmodel_points_outside_its_directory_is_refused(tmp_path: Path, store_uri: str, capsys) -> None:
    run_id, model_dir = _logged(store_uri, tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(model_dir, outside / "copy")  # the same model, outside: a loader that follows a path out reads it
    for label_map in (outside / "label_map.json", outside / "copy" / "artifacts" / "label_map.json"):
        label_map.write_text(json.dumps({"classes": ["STOLEN-0", "STOLEN-1"]}))
    original = (model_dir / "MLmodel").read_text()

    ours = _predict(capsys, run_id, store_uri)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert json.loads(ours.stdout.splitlines()[-1])["label"] in ("neg", "pos")

    up = "/".join([".."] * len(model_dir.relative_to(tmp_path).parts))
    cases: List[Tuple[str, Callable[[], None], Optional[str]]] = [
        ("an absolute artifact path", lambda: _edit(model_dir, lambda m: _label_map(m, str(outside / "label_map.json"))), None),
        ("an artifact path with ..", lambda: _edit(model_dir, lambda m: _label_map(m, f"{up}/outside/label_map.json")), "tiny"),
        ("data: a directory outside", lambda: _edit(model_dir, lambda m: m["flavors"]["python_function"].update(data=str(outside / "copy"))), None),
        ("a link that points out", lambda: _link(model_dir / "artifacts" / "label_map.json", outside / "label_map.json"), "tiny"),
    ]
    wrong = {}
    for name, change, ref in cases:
        change()
        try:
            result = _predict(capsys, ref or run_id, store_uri)
            errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
            if "STOLEN" in result.stdout:
                wrong[name] = "read a file outside the model"
            elif result.returncode != 2 or len(errors) != 1 or "outside the model's directory" not in errors[0]:
                wrong[name] = (result.returncode, errors or result.stderr[-500:])
        finally:
            (model_dir / "MLmodel").write_text(original)
            label_map = model_dir / "artifacts" / "label_map.json"
            if label_map.is_symlink():
                label_map.unlink()
                label_map.write_text(json.dumps({"classes": ["neg", "pos"]}))
    # an earlier version's code (or another program's): refused, with the way to log it again
    own_code = (model_dir / "pyfunc_model.py").read_bytes()
    (model_dir / "pyfunc_model.py").write_bytes(own_code + b"\n# as an earlier version wrote it\n")
    try:
        result = _predict(capsys, run_id, store_uri)
        told = assert_one_line_error(result, "its code is not this version's pipeline/pyfunc_model.py", "`pipeline rerun RUN_ID`")
        assert result.returncode == 2 and "earlier version" in told
    finally:
        (model_dir / "pyfunc_model.py").write_bytes(own_code)
    # inside the directory, but not what was checked: `data` names where MLflow finds the MLmodel and
    # the code file it runs, so a model of ours on top and another's code below it must be refused too
    marker = tmp_path / "ran.txt"
    shutil.copytree(model_dir, model_dir / "sub", ignore=shutil.ignore_patterns("sub"))
    code = model_dir / "sub" / "pyfunc_model.py"
    code.write_text(code.read_text() + f"\nimport pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    _edit(model_dir, lambda m: m["flavors"]["python_function"].update(data="sub"))
    try:
        result = _predict(capsys, run_id, store_uri)
        if marker.exists() or result.returncode != 2 or "refusing to load" not in result.stderr:
            wrong["data: code below the model's own"] = (result.returncode, marker.exists(), result.stderr[-300:])
    finally:
        (model_dir / "MLmodel").write_text(original)
        shutil.rmtree(model_dir / "sub")
    assert not wrong, wrong
    assert _predict(capsys, "tiny", store_uri).returncode == 0  # put back, it loads again


def _link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def test_the_ui_hint_can_be_pasted_into_a_shell_as_it_is() -> None:
    """Found by a helper's hunt: a store path with spaces was printed unquoted in the last line's
    `mlflow ui --backend-store-uri ...`, which the shell then split."""
    import shlex

    from omegaconf import OmegaConf

    uri = "sqlite:////tmp/my store/db dir/m.db"
    hint = tracking.ui_hint(OmegaConf.create({"uri": uri}), "1", "abc")
    words = shlex.split(hint.split(" , then open ")[0])
    assert words == ["mlflow", "ui", "--backend-store-uri", uri]
    database = tracking.ui_hint(OmegaConf.create({"uri": "postgresql://bob:Hunter2SecretXYZ@db/mlflow"}), "1", "abc")
    assert "Hunter2SecretXYZ" not in database and "postgresql://bob:***@db/mlflow" in database


def test_a_directory_store_is_known_by_its_experiments_not_only_by_its_trash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store copied by git or a sync has lost its empty .trash; a directory holding only a SQLite
    store is not a directory store (reading it would make one there)."""
    from pipeline.tracking.store import _check_other_store

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    copied = tmp_path / "copied"
    (copied / "0").mkdir(parents=True)
    (copied / "0" / "meta.yaml").write_text("name: Default\n")
    _check_other_store(str(copied), 5.0, create=False)
    sqlite_only = tmp_path / "runs"
    sqlite_only.mkdir()
    (sqlite_only / "mlflow.db").write_bytes(b"")
    with pytest.raises(TrackingError, match="no MLflow store at"):
        _check_other_store(str(sqlite_only), 5.0, create=False)
    assert sorted(p.name for p in sqlite_only.iterdir()) == ["mlflow.db"]
