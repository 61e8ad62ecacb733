"""The registered best model answers: `pipeline predict`, and `mlflow models serve` over HTTP."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import SHRINK, SPACE, assert_one_line_error, run_cli, runs_in, write_sentiment_csv
from pipeline.tracking.store import using_store

TEXTS = ["the film was great and the acting superb", "a dreadful plot and awful music"]
#: Texts without a token: empty, blank, only punctuation (which this model's standardisation strips).
NO_TOKEN = ["", "   ", "?!"]


class _Pickled(mlflow.pyfunc.PythonModel):
    """A pickled model that leaves a file behind when it is unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("unpickled")
        self.__dict__.update(state)

    def predict(self, context, model_input, params=None):
        return model_input


def _foreign_code(tmp_path: Path) -> Path:
    code = tmp_path / "foreign_model.py"
    code.write_text(
        "import mlflow\n\nclass M(mlflow.pyfunc.PythonModel):\n    def predict(self, context, model_input, params=None):\n"
        "        return model_input\n\nmlflow.models.set_model(M())\n"
    )
    return code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_registered_best_model_predicts_from_the_cli_and_over_http(make_cfg, tmp_path: Path, store_uri: str, capsys,
                                                                        monkeypatch) -> None:
    from pipeline import tune

    data = write_sentiment_csv(tmp_path / "reviews.csv", n=400)
    # the search in this process (its command line: tests/test_tune.py); what is served, by the command line
    tune.run(make_cfg(*SPACE, "dataset=files", f"dataset.path={data}", "training.epochs=4", "tuner.max_trials=2",
                      "tuner.final.registered_model_name=sentiment", "baseline.enabled=false", config_name="tune"))
    client = MlflowClient(store_uri)
    (version,) = client.search_model_versions("name='sentiment'")
    experiment_id = client.get_run(version.run_id).info.experiment_id
    trial = next(r for r in client.search_runs([experiment_id]) if "tuner.trial_id" in r.data.tags)
    refit = next(r for r in client.search_runs([experiment_id]) if "refit.trial_id" in r.data.tags)

    # the command line, by registered name and by the search's run id, from arguments and a file
    by_name = run_cli(["predict", "sentiment", *TEXTS, *NO_TOKEN], cwd=tmp_path)
    assert by_name.returncode == 0, by_name.stderr[-3000:]
    answers = [json.loads(line) for line in by_name.stdout.splitlines() if line.startswith("{")]
    assert [a["text"] for a in answers] == TEXTS + NO_TOKEN
    # a text with no token: an answer in numbers (the classifier's to no evidence), not NaN
    for answer in answers[len(TEXTS):]:
        assert all(math.isfinite(v) for v in answer["probabilities"].values()) and math.isfinite(answer["confidence"]), answer
    answers = answers[: len(TEXTS)]
    assert [a["label"] for a in answers] == ["positive", "negative"]
    for answer in answers:
        assert set(answer["probabilities"]) == {"negative", "positive"}
        assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-5
    # by the search's run id, from a file, and bad input (one line each): through the CLI's entry
    # point in this process, with no TensorFlow start-up per call
    from pipeline import cli

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["predict", version.run_id, "--file", str(tmp_path / "texts.txt")]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")] == answers
    # an empty file (a filter upstream that matched nothing): no lines out, as any filter gives (was an error)
    (tmp_path / "none.txt").write_text("")
    assert cli.main(["predict", version.run_id, "--file", str(tmp_path / "none.txt")]) == 0
    assert capsys.readouterr().out == ""

    client.create_registered_model("empty")  # a name with no versions
    cases = {
        ("predict", "no-such-model", "text"): "no registered model 'no-such-model'",
        ("predict", "empty", "text"): "no registered model 'empty' with a version",
        ("predict", trial.info.run_id, "text"): "logged no model (search trials do not; use the search's run or its registered model)",
        # was "it ran with tracking.log_model=false", which nobody had set
        ("predict", refit.info.run_id, "text"): "logged no model (a member of a search's final model; use the search's run",
        ("predict", "sentiment"): "no texts",
        ("predict", "sentiment", "--file", "missing.txt"): "no file missing.txt",
        ("predict", "sentiment", "--file", str(tmp_path)): "is a directory",
    }
    # models this project did not write are refused before any of them is unpickled or run
    marker = tmp_path / "unpickled.txt"
    with using_store(store_uri):
        for name, model in (("pickled", _Pickled(str(marker))), ("foreign-code", str(_foreign_code(tmp_path)))):
            with mlflow.start_run(experiment_id=experiment_id, run_name=name) as foreign:
                mlflow.pyfunc.log_model(name="model", python_model=model)
            cases[("predict", foreign.info.run_id, "text")] = "refusing to load"
        with mlflow.start_run(experiment_id=experiment_id, run_name="no-model") as bare:  # as a search or train run at log_model=false
            pass
        cases[("predict", bare.info.run_id, "text")] = "logged no model (it ran with tracking.log_model=false)"
    marker.unlink(missing_ok=True)  # MLflow loads a model back once while logging it
    for args, message in cases.items():
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        assert_one_line_error(subprocess.CompletedProcess(list(args), code, captured.out, captured.err), message)

    assert not marker.exists(), "a foreign pickled model was unpickled"

    # found by a helper's hunt: a text that starts like a setting is a text (it was taken as an
    # override, or dropped), `--` ends the settings, and one line splits texts alike from a file and
    # from standard input (only at \n; a byte-order mark is no text)
    def predicted(*args: str) -> list:
        capsys.readouterr()
        assert cli.main(["predict", version.run_id, *args]) == 0
        return [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]

    assert predicted("paths.forward are unclear", "tracking.uri is a thing", "--", "tracking.uri=x") == [
        "paths.forward are unclear", "tracking.uri is a thing", "tracking.uri=x"]
    odd = b"\xef\xbb\xbfa great film\nfirst part\xe2\x80\xa8second part\nform\x0cfeed\r\n"
    (tmp_path / "odd.txt").write_bytes(odd)
    expected = ["a great film", "first part\u2028second part", "form\x0cfeed"]
    assert predicted("--file", str(tmp_path / "odd.txt")) == expected
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(odd), encoding="utf-8"))
    assert predicted("--file", "-") == expected
    # bytes that are not UTF-8, on the command line (Python's surrogateescape) or standard input: one line (was a traceback)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 prices\n"), encoding="utf-8"))
    for args, message in ((("caf\udce9",), "text 1 on the command line is not UTF-8 (character 4)"),
                          (("--file", "-"), "standard input is not UTF-8 text (byte 3)")):
        capsys.readouterr()
        code = cli.main(["predict", version.run_id, *args])
        captured = capsys.readouterr()
        assert_one_line_error(subprocess.CompletedProcess(args, code, captured.out, captured.err), message)
    # the logged model, as MLflow's API and its server call it: bytes are their text, not b'...'; a
    # row's answer keeps the row's index; what cannot be a text is refused
    import pandas as pd

    with using_store(store_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/sentiment/{version.version}")
    frame = loaded.predict(pd.DataFrame({"text": [TEXTS[0].encode(), TEXTS[1], "caf\udce9"]}, index=[7, 5, 5]))
    assert frame.index.tolist() == [7, 5, 5] and frame["label"].tolist()[:2] == ["positive", "negative"]
    assert frame["confidence"].iloc[0] == pytest.approx(loaded.predict(pd.DataFrame({"text": [TEXTS[0]]}))["confidence"].iloc[0], abs=1e-5)
    with pytest.raises(ValueError, match="expected one text per row, got a list"):  # as it always raised
        loaded.predict(pd.DataFrame({"text": [["a", "b"]]}))

    # `mlflow models serve` with the local environment manager, on loopback
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/sentiment/1", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())["predictions"]
        # a cell that is not a text: a 400 that says why, not "an unexpected error" and a traceback
        bad = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[["a", "b"]]]}}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=bad,
                                                          headers={"Content-Type": "application/json"}), timeout=60)
        answer_400 = json.loads(refused.value.read())
        assert refused.value.code == 400 and "expected one text per row, got a list" in answer_400["message"], answer_400
        assert "stack_trace" not in answer_400 and "Traceback" not in json.dumps(answer_400)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert [p["label"] for p in served] == ["positive", "negative"]
    for p, answer in zip(served, answers):
        assert abs(p["probabilities"]["positive"] - answer["probabilities"]["positive"]) < 1e-5


def test_a_missing_text_is_read_as_no_text_not_as_the_word_nan() -> None:
    """An empty cell of a CSV read by pandas is NaN; a served model's input may hold None or pd.NA.
    Each is the empty text (answered as a text without a token), not "nan" or "None" (the unknown
    word, a confident answer)."""
    import numpy as np
    import pandas as pd

    from pipeline.pyfunc_model import _texts

    frame = pd.DataFrame({"text": ["a film", None, np.nan, pd.NA, "", "None"]})
    assert _texts(frame) == ["a film", "", "", "", "", "None"]
    assert _texts(pd.read_csv(io.StringIO('text\na film\n""\n'))) == ["a film", ""]
    assert _texts(np.array(["a film", None], dtype=object)) == ["a film", ""]
    assert _texts([3, 0.5]) == ["3", "0.5"]  # values that are there, as written


def test_predict_piped_into_a_reader_that_stops_ends_quietly(tmp_path: Path, store_uri: str) -> None:
    """`pipeline predict ... | head -1` ended with a BrokenPipeError traceback and exit 1."""
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=120)
    trained = run_cli(["train", *SHRINK, "dataset=files", f"dataset.path={data}"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run,) = runs_in(store_uri)
    (tmp_path / "many.txt").write_text("".join(f"a fine film number {i}\n" for i in range(20000)), encoding="utf-8")
    exe = Path(sys.executable).with_name("pipeline")
    predict = subprocess.Popen([str(exe), "predict", run.info.run_id, "--file", str(tmp_path / "many.txt")], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = predict.stdout.readline()
    predict.stdout.close()  # as `head -1` does
    _, err = predict.communicate(timeout=300)
    assert json.loads(first)["text"] == "a fine film number 0"
    assert predict.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]
