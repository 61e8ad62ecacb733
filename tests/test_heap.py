"""A command's imports are left out of Python's full collections while it runs, and only then
(pipeline/heap.py): Keras and Keras Tuner collect before every model."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import List

import pytest

from conftest import SHRINK, runs_in, write_sentiment_csv
from pipeline import cli, experiment, heap
from pipeline.errors import PipelineError

pytestmark = pytest.mark.heap_as_found  # this process's own freezing (tests/conftest.py) undone for these tests


def _spy(monkeypatch: pytest.MonkeyPatch, collector_on: bool = True) -> List[int]:
    """The process's frozen-object count just after each of the command's calls to heap.freeze,
    where the collector must be on (the command's models are collected as they are let go), or
    still off where the process had turned it off."""
    counts: List[int] = []
    real = heap.freeze

    def counted() -> None:
        real()
        assert gc.isenabled() is collector_on
        counts.append(gc.get_freeze_count())

    monkeypatch.setattr(heap, "freeze", counted)
    return counts


def _train(tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch, name: str, log_model: bool = False) -> int:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the entry point sets it for its own Hydra call
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    return cli.main(["train", *SHRINK, "dataset=files", f"dataset.path={data}", f"tracking.uri={store_uri}",
                     f"tracking.log_model={str(log_model).lower()}", f"hydra.run.dir={tmp_path / name}"])


def test_a_command_run_in_a_process_freezes_its_imports_while_it_trains_and_gives_them_back(
        tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gc.get_freeze_count() == 0
    counts = _spy(monkeypatch)
    assert _train(tmp_path, store_uri, monkeypatch, "run") == 0
    # TensorFlow's, Keras's and MLflow's objects (hundreds of thousands) were out of every collection
    assert counts and min(counts) > 100_000, counts
    assert gc.get_freeze_count() == 0 and gc.isenabled()  # a notebook or a test session gets its collector back as it was

    # refused before any model: the collector, off while the command started, is on again
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert cli.main(["train", "dataset=no_such_dataset"]) == 2
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_predict_freezes_once_its_model_is_loaded(tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert _train(tmp_path, store_uri, monkeypatch, "run", log_model=True) == 0
    run_id = runs_in(store_uri)[0].info.run_id
    counts = _spy(monkeypatch)
    capsys.readouterr()
    assert cli.main(["predict", run_id, "a fine film", "a dull film"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert counts and min(counts) > 100_000  # its predictions ran with the collector on, TensorFlow's objects out of it
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_process_that_froze_objects_itself_keeps_them_as_it_froze_them(
        tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gc.freeze()
    try:
        mine = gc.get_freeze_count()
        counts = _spy(monkeypatch)
        assert _train(tmp_path, store_uri, monkeypatch, "run") == 0
        # nothing more frozen (frozen objects freed by their reference counts leave the count)
        assert counts and max(counts) <= mine
        assert mine * 0.9 < gc.get_freeze_count() <= mine  # and nothing thawed
    finally:
        gc.unfreeze()


def test_a_process_that_turned_the_collector_off_finds_it_off(
        tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gc.disable()
    try:
        counts = _spy(monkeypatch, collector_on=False)
        assert _train(tmp_path, store_uri, monkeypatch, "run") == 0
        assert counts and set(counts) == {0}  # nothing frozen (nor collected for it), the collector left off
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert gc.get_freeze_count() == 0


def test_outside_a_command_or_when_it_fails_the_collector_is_left_as_it_was() -> None:
    # a program calling the pipeline's functions itself (bench/, a notebook)
    experiment.seed_everything(1, deterministic=False)
    assert gc.get_freeze_count() == 0
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    with pytest.raises(PipelineError):
        with heap.command():
            assert not gc.isenabled()  # off while the command starts (imports)
            experiment.seed_everything(1, deterministic=False)
            assert gc.get_freeze_count() > 0 and gc.isenabled()
            raise PipelineError("a user's mistake, found after the first model was built")
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_launchers_job_in_a_process_of_its_own_freezes_too(tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # what a submitit job (SLURM, submitit_local) runs in its own process: Hydra's app and its job, without cli.main around them
    monkeypatch.chdir(tmp_path)
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    monkeypatch.setattr("sys.argv", ["pipeline train", *SHRINK, "dataset=files", f"dataset.path={data}",
                                     f"tracking.uri={store_uri}", "tracking.log_model=false", f"hydra.run.dir={tmp_path / 'job'}"])
    counts = _spy(monkeypatch)
    cli._hydra_app(cli.COMMANDS["train"])()
    assert [r.info.status for r in runs_in(store_uri)] == ["FINISHED"]
    assert counts and min(counts) > 100_000, counts  # its models were built with the imports out of the collections
    assert gc.get_freeze_count() == 0 and gc.isenabled()  # and given back when the job ended
