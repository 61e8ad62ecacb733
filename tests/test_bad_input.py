"""Every user mistake: one clear `error:` line, a non-zero exit, no traceback, no RUNNING run."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import List

import pytest
from mlflow import MlflowClient

from conftest import SHRINK, assert_one_line_error, run_cli, runs_in, write_sentiment_csv
from pipeline import tracking


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_no_run_left(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    if not db.exists():
        return
    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments) if experiments else []
    assert not runs, [(r.info.run_name, r.info.status) for r in runs]


def _files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header_only.csv").write_text("text,label\n")
    (tmp_path / "one_class.csv").write_text("text,label\n" + "".join(f"text number {i},same\n" for i in range(40)))
    (tmp_path / "columns.csv").write_text("review,stars\nnice,5\nbad,1\n")
    (tmp_path / "latin1.csv").write_bytes(b"text,label\nok,a\nfine,b\ncaf\xe9 cr\xe8me,a\n")
    (tmp_path / "utf7.csv").write_bytes(b"text,label\nok,a\nfine,b\n+2D8-,a\n")  # UTF-7 for a lone surrogate
    (tmp_path / "deep.jsonl").write_text('{"text": "ok", "label": "a"}\n' + "[" * 100_000 + "\n")
    (tmp_path / "digits.jsonl").write_text('{"text": "ok", "label": "a"}\n{"text": "t", "label": ' + "9" * 5000 + "}\n")


CASES = [
    ("missing file", ["dataset=files", "dataset.path=nope.csv"], ["data file not found", "nope.csv"]),
    ("empty file", ["dataset=files", "dataset.path=empty.csv"], ["empty", "empty.csv"]),
    ("no rows", ["dataset=files", "dataset.path=header_only.csv"], ["no labelled texts"]),
    ("missing column", ["dataset=files", "dataset.path=columns.csv"], ["no text column 'text'", "review, stars"]),
    ("one class", ["dataset=files", "dataset.path=one_class.csv"], ["only one class", "'same'"]),
    ("undecodable", ["dataset=files", "dataset.path=latin1.csv"], ["latin1.csv: line 4", "utf-8", "dataset.encoding"]),
    ("no path", ["dataset=files"], ["dataset.path"]),
    ("unknown dataset", ["dataset=nope"], ["dataset/nope", "bbc_news"]),
    ("unknown model", ["model=transformer"], ["model/transformer", "lstm"]),
    ("misspelled key", ["training.epoch=3"], ["training.epoch", "TrainingConfig"]),
    ("wrong type", ["training.epochs=many"], ["training.epochs=many", "Integer"]),
    ("a directory as the file", ["dataset=files", "dataset.path=."], ["data file is a directory"]),
    ("percentile over 100", ["dataset.length_percentile=150"], ["dataset.length_percentile must be above 0 and at most 100, got 150"]),
    # a search's settings given to train: Hydra's "No match in the defaults list", or a schema's bare KeyError
    ("tuner on train", ["tuner=random"], ["Could not override 'tuner'", "settings of `pipeline tune`, not `pipeline train`"]),
    ("+tuner on train", ["+tuner=random"], ["settings of `pipeline tune`, not `pipeline train`"]),
    # a dataset whose files come from the data directory: where it looked, and how to point it elsewhere
    ("no data directory", ["dataset=sst2", "paths.data_dir=nowhere"], ["data file not found: nowhere/sst2/", "paths.data_dir=nowhere",
                                                                       "PIPELINE_DATA_DIR"]),
    # the job ran in its output directory: a relative dataset.path not found there, the store made there
    ("hydra.job.chdir", ["hydra.job.chdir=true", "dataset=files", "dataset.path=columns.csv"], ["hydra.job.chdir=true is not supported"]),
    ("hydra.job.chdir in a sweep", ["-m", "seed=1,2", "hydra.job.chdir=true"], ["hydra.job.chdir=true is not supported"]),
    # what only looks like a number (str.isdigit takes it, int() does not), and numbers past Python's 4,300 digits
    ("a column index in other digits", ["dataset=files", "dataset.path=columns.csv", "dataset.header=false", "dataset.text_column='--0'",
                                        "dataset.label_column=1"], ["no text column '--0'"]),
    ("a sequence length in other digits", ["dataset.sequence_length='²'"], ["dataset.sequence_length must be a positive integer or auto"]),
    ("a number of 5,000 digits", ["dataset.vocab_size=" + "9" * 5000], ["dataset.vocab_size", "4300 digits"]),
    ("a label of 5,000 digits", ["dataset=files", "dataset.path=digits.jsonl"], ["digits.jsonl: line 2", "JSON that cannot be read"]),
    ("JSON nested past the stack", ["dataset=files", "dataset.path=deep.jsonl"], ["deep.jsonl: line 2", "nested too deep"]),
    ("a lone surrogate", ["dataset=files", "dataset.path=utf7.csv", "dataset.encoding=utf-7"], ["utf7.csv: line 4", "lone surrogate"]),
]


@pytest.mark.parametrize("name, args, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line(tmp_path: Path, name: str, args: List[str], fragments: List[str]) -> None:
    _files(tmp_path)
    result = run_cli(["train", *SHRINK, *args], cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    _assert_no_run_left(tmp_path)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists(), "refused before the job's directory"


@pytest.mark.no_store  # asserts what the command leaves in an empty directory
@pytest.mark.parametrize("command", [["train"], ["compare"], ["rerun", "0123456789abcdef0123456789abcdef"]], ids=lambda c: c[0])
def test_an_override_that_does_not_parse_points_at_its_own_command_s_help(tmp_path: Path, command: List[str]) -> None:
    result = run_cli([*command, "tracking.uri=sqlite:///ünï/x.db"], cwd=tmp_path)
    assert_one_line_error(result, "cannot parse override 'tracking.uri=sqlite:///ünï/x.db'", f"(see `pipeline {command[0]} --help`)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.no_store  # asserts what the command leaves in the directory
@pytest.mark.parametrize("args, message", [
    (["--cfg", "bogus"], "--cfg takes one of job, hydra, all, not 'bogus'"),
    (["--cfg"], "--cfg needs a value"),
    (["--info", "bogus"], "--info takes one of all, config, defaults"),
    (["--config-name"], "--config-name needs a value"),
    (["--package"], "--package needs a value"),
    (["--experimental-rerun", "nope.pickle"], "--experimental-rerun nope.pickle: no such file"),  # was a traceback
    (["-sc", "install=tcsh"], "no shell completion for 'tcsh'; install= takes bash, fish, zsh"),  # was a traceback
], ids=["cfg-bogus", "cfg-no-value", "info-bogus", "config-name-no-value", "package-no-value", "experimental-rerun", "completion-tcsh"])
def test_a_hydra_flag_with_a_bad_value_is_one_line(tmp_path: Path, args: List[str], message: str) -> None:
    """Hydra's parser printed its nine-line usage text, or a traceback."""
    result = run_cli(["train", *args], cwd=tmp_path)
    assert_one_line_error(result, message)
    assert result.returncode == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train", "--cfg", "job"]], ids=" ".join)
def test_output_into_a_reader_that_has_gone_ends_quietly(tmp_path: Path, args: List[str]) -> None:
    """`pipeline train --help | head -0`: a BrokenPipeError traceback (the reader gone before a byte)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=tmp_path, stdout=write, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]


def test_python_m_pipeline_is_the_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: pipeline <command>"), result.stderr[-2000:]


@pytest.mark.no_store  # asserts what the command leaves in the directory
@pytest.mark.parametrize("args", [["-m", "seed=1,2", "hydra.sweep.dir=afile/sub"], ["hydra.run.dir=afile/sub"]], ids=["sweep", "run"])
def test_an_output_directory_that_cannot_be_made_is_one_line_before_any_run(tmp_path: Path, args: List[str]) -> None:
    """A sweep's parent run was opened first, then Hydra's traceback, the run left RUNNING."""
    (tmp_path / "afile").write_text("not a directory\n")
    result = run_cli(["train", *SHRINK, *args], cwd=tmp_path)
    key = args[-1].split("=")[0]
    assert_one_line_error(result, f"{key}=afile/sub: cannot make the directory (Not a directory)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no store, no run, no outputs/


@pytest.mark.no_store  # asserts what the command leaves in an empty directory
def test_unreachable_tracking_server_is_reported_before_any_data_is_read(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    result = run_cli(["train", *SHRINK, f"tracking.uri={uri}"], cwd=tmp_path)
    assert_one_line_error(result, "tracking server", uri, "unreachable")
    assert "Epoch" not in result.stdout and not (tmp_path / "mlruns").exists()


#: TensorFlow's C++ log lines (``I0000 00:00:1795643929.491439   15519 cudart_stub.cc:31] ...``) and absl's
#: notice before them.
TF_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]|WARNING: All log messages before absl::InitializeLog)")


#: Refused once the data is read, before the tracking store is created and before TensorFlow is
#: imported (pipeline/validate.py reads it right after the settings).
ONE_CLASS = ["dataset=files", "dataset.path=one_class.csv"]


def test_an_error_is_the_only_line_on_stderr(tmp_path: Path) -> None:
    _files(tmp_path)
    result = run_cli(["train", *ONE_CLASS], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: only one class ('same') in the training data; need at least two"], result.stderr[-3000:]


@pytest.mark.no_store  # the new store's start-up lines
@pytest.mark.parametrize("switch", ["--verbose", pytest.param("PIPELINE_TF_LOGS=1", marks=pytest.mark.stress)])  # (the same switch, by environment)
def test_verbose_shows_tensorflow_and_mlflow_start_up_lines(tmp_path: Path, switch: str) -> None:
    args, env = (["--verbose"], {}) if switch == "--verbose" else ([], {"PIPELINE_TF_LOGS": "1"})
    result = run_cli(["train", *args, *SHRINK, "dataset.max_samples=100"], cwd=tmp_path, env=env)
    lines = result.stderr.splitlines()
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(TF_LINE.match(line) for line in lines), result.stderr[-3000:]
    assert any("INFO mlflow" in line for line in lines), result.stderr[-3000:]  # the new store's tables


def test_the_switch_leaves_tensorflow_its_log_level_and_reaches_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import quiet

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # whatever configure adds goes with the test
    tensorflow_logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(tensorflow_logger, "filters", list(tensorflow_logger.filters))
    for name in (*quiet.QUIET_ENV, quiet.VERBOSE_ENV):
        monkeypatch.setenv(name, "")  # what configure sets below is undone after the test, as it was before
        monkeypatch.delenv(name)
    assert quiet.configure(["tune", "--verbose", "tuner.max_trials=3"]) == ["tune", "tuner.max_trials=3"]
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and "MLFLOW_LOGGING_LEVEL" not in os.environ
    assert os.environ["PIPELINE_TF_LOGS"] == "1"  # a search's worker processes inherit it

    monkeypatch.setenv("PIPELINE_TF_LOGS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's own setting is kept
    assert quiet.configure(["train"]) == ["train"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1" and os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    # after `--` it is a text (`pipeline predict RUN -- --verbose` classified nothing: a helper's review)
    assert quiet.configure(["predict", "RUN", "--", "--verbose"]) == ["predict", "RUN", "--", "--verbose"]
    assert os.environ["PIPELINE_TF_LOGS"] == "0"


def test_tensorflow_s_retracing_warning_is_dropped_unless_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's third or fourth job in one process got TensorFlow's "5 out of the last 5 calls ...
    triggered tf.function retracing. Tracing is expensive ..." (each job's new model traces its
    steps; TensorFlow counts them by the step's code): dropped by default, its other warnings kept."""
    import tensorflow as tf

    from pipeline import quiet

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    logger = logging.getLogger("tensorflow")
    # whatever configure adds goes with the test, and an earlier test's configure is not here
    monkeypatch.setattr(logger, "filters", [f for f in logger.filters if type(f).__module__ != quiet.__name__])
    for name in (*quiet.QUIET_ENV, quiet.VERBOSE_ENV):
        monkeypatch.setenv(name, "")  # what configure sets below is undone after the test, as it was before
        monkeypatch.delenv(name)
    seen: list = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        def as_models_do(step) -> None:  # each call a new tf.function of the same code, as each job's model
            for n in range(1, 8):
                tf.function(step)(tf.zeros([n]))

        def verbose_step(x):
            return x + 1

        quiet.configure(["train", "--verbose"])  # --verbose: TensorFlow's own warning, as before
        as_models_do(verbose_step)
        assert any("triggered tf.function retracing" in m for m in seen), seen

        def quiet_step(x):
            return x + 1

        seen.clear()
        del os.environ[quiet.VERBOSE_ENV]  # as a new process without --verbose starts
        quiet.configure(["train"])
        as_models_do(quiet_step)
        assert not any("retracing" in m for m in seen), seen
        logger.warning("another TensorFlow warning")
        assert seen == ["another TensorFlow warning"]
    finally:
        logger.removeHandler(handler)


def test_unknown_command(tmp_path: Path) -> None:
    result = run_cli(["trian"], cwd=tmp_path)
    assert_one_line_error(result, "unknown command 'trian'", "train")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    from pipeline import cli

    assert cli.main([]) == 2  # a script that forgot the command must not look like it succeeded
    captured = capsys.readouterr()
    assert "train" in captured.err and not captured.out
    assert cli.main(["--help"]) == 0 and "train" in capsys.readouterr().out


def test_help_says_what_exists(tmp_path: Path) -> None:
    top = run_cli(["--help"], cwd=tmp_path)
    assert top.returncode == 0 and "train" in top.stdout
    result = run_cli(["train", "--help"], cwd=tmp_path)
    assert result.returncode == 0
    for option in ("dataset: bbc_news, files, imdb, mr, sst2, sst2_phrases, subj", "model: bilstm, lstm", "epochs:"):
        assert option in result.stdout


def test_a_signal_inside_a_store_call_is_raised_once_the_call_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM or Ctrl-C arriving while the main thread is inside SQLAlchemy or sqlite3 (an exception
    raised mid-write can leave SQLite's lock held, and closing the runs KILLED then fails) is sent
    again 50 ms later instead of raised there, for at most a few seconds (a database that does not
    answer does not hold Ctrl-C up); anywhere else it is raised at once."""
    import signal
    import time

    from pipeline import cli

    sent: list = []
    monkeypatch.setattr(cli.os, "kill", lambda pid, signum: sent.append(signum))
    monkeypatch.setattr(cli, "_waiting", {})  # this test's own record of signals waiting
    store = {"__name__": "sqlalchemy.orm.session"}
    exec("import sys\ndef commit():\n    return sys._getframe()\n", store)
    inside = store["commit"]()
    cli._interrupt(signal.SIGTERM, inside)  # not raised
    cli._interrupt(signal.SIGINT, inside)
    deadline = time.monotonic() + 10
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(sent) == sorted([signal.SIGTERM, signal.SIGINT])
    # still inside a database call after DEFER_AT_MOST_S: raised there all the same
    cli._waiting[signal.SIGTERM] = time.monotonic() - cli.DEFER_AT_MOST_S - 1
    with pytest.raises(cli.Terminated):
        cli._interrupt(signal.SIGTERM, inside)
    with pytest.raises(cli.Terminated):
        cli._interrupt(signal.SIGTERM, sys._getframe())
    with pytest.raises(KeyboardInterrupt):
        cli._interrupt(signal.SIGINT, sys._getframe())


def test_a_failing_run_is_marked_failed_and_ctrl_c_killed(store_uri: str, make_cfg) -> None:
    cfg = make_cfg(f"tracking.uri={store_uri}")
    tracking.preflight(cfg.tracking)
    with pytest.raises(RuntimeError):
        with tracking.tracked_run(cfg.tracking, "fails", {}):
            raise RuntimeError("out of memory")
    with pytest.raises(KeyboardInterrupt):
        with tracking.tracked_run(cfg.tracking, "interrupted", {}):
            raise KeyboardInterrupt
    runs = runs_in(store_uri)
    assert {r.info.run_name: r.info.status for r in runs} == {"fails": "FAILED", "interrupted": "KILLED"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset.text_column=-1", "dataset.label_column=1"], "dataset.text_column -1: a column index counts from 0"),
        (["dataset.delimiter=';;'"], "dataset.delimiter must be one character, got ';;'"),
        (["dataset.val_size=1.5"], "dataset.val_size must be between 0 and 1, got 1.5"),
        (["dataset.test_size=0"], "dataset.test_size must be between 0 and 1, got 0"),
        (["dataset.val_size=0.5", "dataset.test_size=0.5"], "dataset.val_size + dataset.test_size must be below 1"),
        (["dataset.split_seed=-1"], "dataset.split_seed must be between 0 and 4294967295, got -1"),  # once scikit-learn's words
    ],
)
def test_reader_and_split_settings_are_refused_as_given(tmp_path: Path, make_cfg, overrides: List[str], message: str) -> None:
    """Each once ended in a traceback, or was reported rescaled (val_size 1.5 as 1.6666)."""
    from pipeline import data
    from pipeline.errors import PipelineError

    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(40)))
    cfg = make_cfg("dataset=files", f"dataset.path={csv_path}", *overrides)
    with pytest.raises(PipelineError) as raised:
        data.load_splits(cfg.dataset, 0)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_unexpected_error_is_raised_as_itself_not_as_a_bug_in_the_error_handler(make_cfg) -> None:
    """A bug's traceback must show the bug: the handler that turns a full disk or a lost server into
    one line re-raises anything else unchanged (it once raised an AttributeError of its own)."""
    from pipeline import cli

    def job(cfg):
        raise ValueError("a bug in a job")

    with pytest.raises(ValueError, match="a bug in a job"):
        cli._guarded(job, make_cfg())


def test_hydra_s_own_lines_still_run(tmp_path: Path) -> None:
    """What the flag checks must let through: a switch between a flag and its value (Hydra's
    parser takes the switches first), an output directory named by what Hydra sets only as the job
    starts (left to Hydra)."""
    shown = run_cli(["train", "--cfg", "--resolve", "job", *SHRINK], cwd=tmp_path)
    assert shown.returncode == 0 and "dataset:" in shown.stdout, shown.stderr[-2000:]
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=80)
    ran = run_cli(["train", *SHRINK, "dataset=files", f"dataset.path={data}", "hydra.run.dir=out/${hydra:runtime.choices.model}"], cwd=tmp_path)
    assert ran.returncode == 0 and (tmp_path / "out" / "lstm").is_dir(), ran.stderr[-2000:]
    assert "Warning" not in ran.stderr, ran.stderr[-2000:]  # was: Validate.on_run_start raised InterpolationResolutionError


def test_a_broken_pipe_that_is_not_stdout_is_not_taken_for_a_reader_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import cli, compare

    def broken(argv):  # a socket or a subprocess's pipe, inside the command
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(compare, "main", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["compare"])


def test_a_missing_file_gets_the_data_directory_hint_only_when_it_is_in_it(make_cfg, tmp_path: Path) -> None:
    from pipeline import limits
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as typo:
        limits.sections(make_cfg("dataset=files", "dataset.path=typo.csv", "paths.data_dir=."))
    assert str(typo.value) == "data file not found: typo.csv (dataset.path)"
    with pytest.raises(ConfigError, match=r"the data directory is paths.data_dir=nowhere \(set PIPELINE_DATA_DIR"):
        limits.sections(make_cfg("dataset=mr", "paths.data_dir=nowhere"))
