"""`pipeline rerun` and `pipeline compare` through the real CLI and a real MLflow store."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import EXPERIMENT, SHRINK, SPACE, assert_one_line_error, curve, run_cli, runs_in, write_sentiment_csv
from pipeline import provenance, rerun, tune
from pipeline.rerun import RerunError



def _runs(client: MlflowClient):
    return runs_in(client.tracking_uri)


def _train(tmp_path: Path, *extra: str) -> str:
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    result = run_cli(
        ["train", *SHRINK, "dataset=files", f"dataset.path={data}", "training.epochs=3", "training.early_stopping.enabled=false",
         "tracking.log_model=false", *extra],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("run ", 1)[1].split()[0]


def test_a_rerun_of_a_train_run_reproduces_every_epoch_and_compares(tmp_path: Path, store_uri: str, capsys: pytest.CaptureFixture) -> None:
    original = _train(tmp_path)
    result = run_cli(["rerun", original], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"rerun of {original}: per-epoch loss reproduced" in result.stdout

    client = MlflowClient(store_uri)
    (new,) = [r for r in _runs(client) if r.data.tags.get("rerun_of") == original]
    old = client.get_run(original)
    assert new.info.status == "FINISHED" and new.info.run_name.startswith("rerun-")
    for key in ("loss", "val_loss", "val_accuracy"):
        before, after = curve(client, original, key), curve(client, new.info.run_id, key)
        assert len(before) == 3 and after == pytest.approx(before, abs=1e-6)
    for key in ("test_accuracy", "test_loss", "test_f1_macro"):
        assert new.data.metrics[key] == pytest.approx(old.data.metrics[key], abs=1e-6)
    differing = {k for k in old.data.params if old.data.params[k] != new.data.params.get(k)}
    assert differing == {"tracking.run_name"}, differing

    # compare the two: a ranked table in the terminal, and a comparison run holding it and a plot
    compared = run_cli(["compare", original, new.info.run_id], cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr[-3000:]
    lines = compared.stdout.splitlines()
    assert "test_accuracy" in lines[0] and sum(original[:8] in line or new.info.run_id[:8] in line for line in lines) == 2
    (comparison,) = [r for r in _runs(client) if r.data.tags.get("pipeline.command") == "compare"]
    assert set(comparison.data.tags["compared_runs"].split(",")) == {original, new.info.run_id}
    table = pd.read_csv(client.download_artifacts(comparison.info.run_id, "compare/runs.csv", str(tmp_path)))
    assert sorted(table["run_id"]) == sorted([original, new.info.run_id])
    # each run's 95% interval beside its test accuracy, so two runs that do not really differ show it
    assert (table["test_accuracy_ci_low"] < table["test_accuracy"]).all() and (table["test_accuracy"] < table["test_accuracy_ci_high"]).all()
    assert "test_accuracy_ci_low" in lines[0]
    assert {a.path for a in client.list_artifacts(comparison.info.run_id, "compare")} >= {"compare/comparison.png"}

    # a run made from a wheel of the same code (no git state) is rerun from a checkout, and the other
    # way round: the code's digest is the same, so it is not refused
    client.set_tag(original, "git_commit", "unknown")
    client.set_tag(original, "git_dirty", "unknown")
    rerun.run(original, [], tracking_uri=store_uri)
    assert "differs from the original" not in capsys.readouterr().err

    # what another machine or a changed data file would have recorded: refused, unless --force
    assert old.data.tags["code_digest"] == provenance.code_digest()  # the code that ran, installed from a wheel or not
    client.set_tag(original, "data_fingerprint", "0" * 16)
    client.set_tag(original, "version.tensorflow", "2.0.0")
    client.set_tag(original, "code_digest", "0" * 64)  # another wheel's code, or another edit of a dirty tree
    # (in this process, to keep the suite's time: the CLI tells any refusal in one line, as
    # test_rerun_and_compare_bad_input_is_one_line checks)
    count = len(_runs(client))
    with pytest.raises(RerunError, match=r"data_fingerprint 0000000000000000 ->.*version.tensorflow 2.0.0 ->.*--force"):
        rerun.run(original, [], tracking_uri=store_uri)
    assert len(_runs(client)) == count, "a refused rerun records nothing"
    rerun.run(original, [], force=True, tracking_uri=store_uri)
    *_, forced_run = sorted((r for r in _runs(client) if r.data.tags.get("rerun_of") == original), key=lambda r: r.info.start_time)
    assert "data_fingerprint" in forced_run.data.tags["rerun_differences"]
    assert "version.tensorflow" in forced_run.data.tags["rerun_differences"]
    assert f"code_digest {'0' * 64} -> {provenance.code_digest()}" in forced_run.data.tags["rerun_differences"]
    out, err = capsys.readouterr()  # warnings are diagnostics: on stderr, apart from the results
    assert "warning: differs from the original: data_fingerprint" in err and "warning:" not in out

    # a run that did not finish (killed, failed, or its process gone) is rerun, and said to be
    client.set_terminated(original, "KILLED")
    rerun.run(original, [], force=True, tracking_uri=store_uri)
    out, err = capsys.readouterr()
    assert f"warning: run {original} is KILLED, not FINISHED" in err and "warning:" not in out


def test_a_search_reruns_its_best_trial_and_a_trial_reruns_itself(make_cfg, tmp_path: Path, store_uri: str) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    # the search in this process (its command line: tests/test_tune.py); its rerun and comparison by the command line
    tune.run(make_cfg(*SPACE, "dataset=files", f"dataset.path={data}", "training.epochs=2", "tuner.max_trials=2",
                      "tracking.log_model=false", "baseline.enabled=false", config_name="tune"))
    client = MlflowClient(store_uri)
    (parent,) = [r for r in _runs(client) if r.data.tags.get("pipeline.command") == "tune"]
    trials = {r.data.tags["tuner.trial_id"]: r for r in _runs(client) if "tuner.trial_id" in r.data.tags}
    best = trials[parent.data.tags["best_trial_id"]]
    other = next(t for t in trials.values() if t.info.run_id != best.info.run_id)

    # the search's final model: the best trial's values trained on train+validation for the refit's epochs
    (refit,) = [r for r in _runs(client) if "refit.seed" in r.data.tags]
    result = run_cli(["rerun", parent.info.run_id], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (replayed,) = [r for r in _runs(client) if r.data.tags.get("rerun_of") == parent.info.run_id]
    assert replayed.data.tags["rerun_of_run"] == refit.info.run_id
    assert replayed.data.params["model.units"] == best.data.params["hp.model.units"]
    assert replayed.data.params["training.fit_on"] == "train_val" and replayed.data.params["training.epochs"] == refit.data.tags["refit.epochs"]
    assert curve(client, replayed.info.run_id, "loss") == pytest.approx(curve(client, refit.info.run_id, "loss"), abs=1e-6)
    assert replayed.data.metrics["test_accuracy"] == pytest.approx(client.get_run(parent.info.run_id).data.metrics["test_accuracy"])
    assert "per-epoch loss reproduced" in result.stdout

    rerun.run(other.info.run_id, [], tracking_uri=store_uri)  # (in this process: the CLI's path is the search's, above)
    (again,) = [r for r in _runs(client) if r.data.tags.get("rerun_of") == other.info.run_id]
    assert again.data.params["model.embedding_dim"] == other.data.params["hp.model.embedding_dim"]
    assert curve(client, again.info.run_id, "val_loss") == pytest.approx(curve(client, other.info.run_id, "val_loss"), abs=1e-6)

    # compare the search: its trials ranked by their best-epoch objective, logged to the parent
    compared = run_cli(["compare", parent.info.run_id], cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr[-3000:]
    rows = [line.split() for line in compared.stdout.splitlines() if line.strip().startswith(("1 ", "2 "))]
    # each trial by the number its progress lines gave it, and its run's name
    assert sorted(" ".join(r[1:5]) for r in rows) == ["trial 1 (run trial-0)", "trial 2 (run trial-1)"]
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "compare/runs.csv", str(tmp_path)))
    assert sorted(table["run_id"]) == sorted(t.info.run_id for t in trials.values())
    assert table["trial_score"].is_monotonic_decreasing
    assert table["trial_score"].iloc[0] == pytest.approx(best.data.metrics["trial_score"])
    assert rows[0][2] == str(table["run"].iloc[0]).split()[1]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def _train_here(make_cfg, tmp_path: Path, *extra: str) -> str:
    """A train run recorded in this process (no TensorFlow start-up): for what reads its record."""
    from pipeline import train

    data = write_sentiment_csv(tmp_path / "reviews.csv")
    run_id, _ = train.train_and_record(make_cfg("dataset=files", f"dataset.path={data}", "tracking.log_model=false", *extra))
    return run_id


def test_rerun_and_compare_bad_input_is_one_line(tmp_path: Path, store_uri: str, make_cfg, capsys: pytest.CaptureFixture) -> None:
    original = _train_here(make_cfg, tmp_path, "training.epochs=1")
    client = MlflowClient(store_uri)
    mlflow.set_tracking_uri(store_uri)
    with mlflow.start_run(experiment_id=client.get_experiment_by_name(EXPERIMENT).experiment_id) as foreign:
        mlflow.log_param("lr", 0.1)
    mlflow.set_tracking_uri(None)
    deleted = _train_here(make_cfg, tmp_path, "training.epochs=1", "seed=7")
    artifacts = Path(urlparse(client.get_run(deleted).info.artifact_uri).path)
    shutil.rmtree(artifacts / "config")
    count = len(_runs(client))

    cases = {
        ("rerun", "0123456789abcdef0123456789abcdef"): "no run '0123456789abcdef0123456789abcdef'",
        ("rerun", foreign.info.run_id): "not recorded by pipeline",
        ("rerun", deleted): "has no artifact config/resolved_config.yaml",
        ("rerun", original, "--yes"): "unrecognized arguments: --yes",
        ("rerun", original, "+training.epochz=1"): "bad override '+training.epochz=1'",
        ("rerun", original, "training.epochz=1"): "training.epochz is not a setting of the recorded config",
        ("rerun", original, "model=transformer"): "model/transformer",
        ("rerun",): "the following arguments are required: run_id",
        ("rerun", original, "training.epochs=many"): "training.epochs",
        ("compare", original): "is not a search",
        ("compare", original, original): "(named more than once: one run) is not a search",  # (was a one-row table)
        ("compare", original, deleted, "--metric", "bleu"): "none of these runs logged 'bleu'",
        ("compare", "--experiment", "nope"): "no experiment 'nope'",
        ("compare", "--top", "many"): "argument --top: invalid int value: 'many'",
        ("compare", "--top", "0"): "argument --top: must be at least 1, got 0",
    }
    from pipeline import cli

    for args, message in cases.items():
        # in this process (the CLI's own entry point), to spare a TensorFlow start-up per case
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        result = subprocess.CompletedProcess(list(args), code, captured.out, captured.err)
        assert_one_line_error(result, message)
    runs = _runs(client)
    assert len(runs) == count, "no bad command recorded a run"
    assert all(r.info.status != "RUNNING" for r in runs)


def test_run_ids_texts_and_overrides_may_come_before_or_after_options() -> None:
    from pipeline import compare, predict

    for argv in (["RUN", "--no-log", "tracking.uri=sqlite:///x.db", "OTHER"], ["tracking.uri=sqlite:///x.db", "RUN", "--top", "3", "OTHER"]):
        args = compare._parse(argv)
        assert args.run_ids == ["RUN", "OTHER"] and args.overrides == ["tracking.uri=sqlite:///x.db"], argv
    args = predict._parse(["MODEL", "--file", "texts.txt", "tracking.uri=sqlite:///x.db", "a text"])
    assert (args.model, args.file, args.texts, args.overrides) == ("MODEL", "texts.txt", ["a text"], ["tracking.uri=sqlite:///x.db"])


def test_a_run_recorded_before_values_were_named_by_path_still_rebuilds() -> None:
    """A trial recorded as ``hp.units`` (bare names) by a config without the settings added since
    (``model.pooling``, ``training.bucket_by_length``) rebuilds; overrides use Hydra's grammar."""
    from pipeline import tracking
    from pipeline.config import compose_train, to_container
    from pipeline.errors import ConfigError
    from pipeline.rerun import rebuild_config

    recorded = to_container(compose_train(["dataset=sst2", "model.pooling=max", "dataset.split_punctuation=true"]))
    del recorded["model"]["pooling"], recorded["training"]["bucket_by_length"], recorded["dataset"]["split_punctuation"]
    del recorded["training"]["fit_on"], recorded["training"]["lr_schedule"], recorded["model"]["embedding_init"]
    trial = tracking.RunRecord("r" * 32, "trial-3", "FINISHED", "1", {"tuner.trial_id": "3"},
                               {"hp.units": "16", "hp.learning_rate": "0.01", "hp.tuner/epochs": "4", "seed": "42"}, {})
    cfg, notes = rebuild_config(recorded, trial, [])
    assert (cfg.model.units, cfg.training.learning_rate, cfg.training.epochs) == (16, 0.01, 4)
    # what the run had before these settings existed, whatever today's defaults are
    assert (cfg.model.pooling, cfg.training.bucket_by_length, cfg.dataset.name) == ("last", True, "sst2")
    assert (cfg.dataset.split_punctuation, cfg.training.fit_on) == (False, "train")
    assert (cfg.training.lr_schedule, cfg.model.embedding_init) == ("constant", "random")
    assert notes == []
    folded = tracking.RunRecord("f" * 32, "trial-1", "FINISHED", "1", {"tuner.trial_id": "1"}, {"hp.model.units": "16"}, {"cv_folds": 5.0})
    _, notes = rebuild_config(recorded, folded, [])
    assert notes == ["trial 2 (run trial-1) was scored on 5 folds; the rerun trains its values once on the training split, so its numbers will differ"]
    # cut off before its end, which logs cv_folds: known by the tag it started with, or (recorded before the tag) by a fold's curves
    killed = tracking.RunRecord("k" * 32, "trial-1", "KILLED", "1", {"tuner.trial_id": "1", "tuner.cv_folds": "3"}, {"hp.model.units": "16"}, {})
    assert rebuild_config(recorded, killed, [])[1] == [notes[0].replace("5 folds", "3 folds")]
    older = tracking.RunRecord("o" * 32, "trial-1", "KILLED", "1", {"tuner.trial_id": "1"}, {"hp.model.units": "16"}, {"fold0.val_accuracy": 0.5})
    assert rebuild_config(recorded, older, [])[1] == [notes[0].replace("5 folds", "folds")]
    stopped = tracking.RunRecord("s" * 32, "trial-2", "FINISHED", "1", {"tuner.trial_id": "2", "tuner.pruned": "stopped after epoch 2: val_accuracy 0.5000 behind 0.7000, the median of 2 finished trials by then"},
                                 {"hp.model.units": "16"}, {})
    _, notes = rebuild_config(recorded, stopped, [])
    assert notes == ["trial 3 (run trial-2) was stopped after epoch 2: val_accuracy 0.5000 behind 0.7000, the median of 2 finished trials by then (tuner.prune); "
                     "the rerun trains every epoch, so its epochs after that go beyond the trial's record"]
    # a Hyperband round of 2 epochs under today's cosine over training.epochs=4: the rerun's 2 epochs decay over 2
    cosine = to_container(compose_train(["dataset=sst2", "training.epochs=4"]))
    short = tracking.RunRecord("h" * 32, "trial-0", "FINISHED", "1", {"tuner.trial_id": "0"},
                               {"hp.model.units": "16", "hp.tuner/epochs": "2", "hp.tuner/initial_epoch": "0"}, {})
    cfg, notes = rebuild_config(cosine, short, [])
    assert cfg.training.epochs == 2 and notes == [
        "trial 1 (run trial-0) trained 2 epochs in a Hyperband round on a cosine schedule over training.epochs=4; the rerun "
        "trains 2 epochs on a schedule over its own 2, so its numbers will differ (training.lr_schedule=constant searches rerun exactly)"]
    assert rebuild_config(cosine, short, ["training.lr_schedule=constant"])[1] == notes  # the note is the trial's, not the overrides'
    full = tracking.RunRecord("g" * 32, "trial-4", "FINISHED", "1", {"tuner.trial_id": "4"}, {"hp.model.units": "16", "hp.tuner/epochs": "4"}, {})
    assert rebuild_config(cosine, full, [])[1] == []

    cfg, _ = rebuild_config(recorded, None, ["model=bilstm", "training.epochs=2", "dataset.max_samples=100"])
    assert (cfg.model.name, cfg.model.bidirectional, cfg.training.epochs) == ("bilstm", True, 2)
    assert cfg.dataset.name == "sst2", "a group override replaces only its own group"
    for bad, fragment in (("+training.epochz=1", "+training.epochz=1"), ("training.epochz=1", "not a setting"),
                          ("~model.units", "model.units"), ("model.units=[", "cannot parse")):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            rebuild_config(recorded, None, [bad])


def test_compare_says_when_its_best_run_is_not_really_ahead() -> None:
    """The line under the table: a lead inside the best run's 95% interval is no difference the
    test split can show, and test scores from different test splits do not rank runs at all."""
    from pipeline.compare import lead, table
    from pipeline.tracking import RunRecord

    def run(run_id: str, accuracy: float, low: float, high: float, test_split: str) -> RunRecord:
        return RunRecord(run_id, run_id, "FINISHED", "1", {"data_fingerprint.test": test_split}, {"seed": run_id},
                         {"test_accuracy": accuracy, "test_accuracy_ci_low": low, "test_accuracy_ci_high": high})

    def said(*runs: RunRecord) -> str:
        frame = table(list(runs), "test_accuracy", "max")
        return lead(frame[frame["test_accuracy"].notna()], list(runs), "test_accuracy")

    close = said(run("a", 0.8105, 0.7919, 0.8279, "s"), run("b", 0.8171, 0.7987, 0.8342, "s"))
    assert close.startswith("best: b (test_accuracy=0.8171, 0.0066 ahead of the next, inside its 95% interval [0.7987, 0.8342]")
    assert "no difference this test split can show" in close
    apart = said(run("a", 0.7000, 0.6800, 0.7200, "s"), run("b", 0.9000, 0.8800, 0.9200, "s"))
    assert apart == "best: b (test_accuracy=0.9000, 0.2000 ahead of the next, outside its 95% interval [0.8800, 0.9200])"
    mixed = said(run("a", 0.7000, 0.6800, 0.7200, "s"), run("b", 0.9000, 0.8800, 0.9200, "t"))
    assert mixed.endswith("; but these runs were tested on 2 different test splits, so their test scores do not rank them")
    assert "interval" not in mixed


def test_compare_shows_a_resumed_search_one_row_per_trial_and_ranks_trials_named_by_id_as_their_search(
        store_uri: str, capsys: pytest.CaptureFixture) -> None:
    """Runs recorded as a resumed search records them (MLflow's own API, no training): a trial cut
    off and run again is one row; trials named by id rank by trial_score the way their search does
    (val_loss: lowest first); the search's own row has its final model's values; a metric they lack
    names what they have, the folds' curves as one entry."""
    from pipeline import cli

    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("resumed")
    parent = client.create_run(experiment_id, run_name="search", tags={"pipeline.command": "tune", "best.model.units": "16"})
    for key, value in {"tuner.direction": "min", "tuner.objective": "val_loss", "model.units": "128"}.items():
        client.log_param(parent.info.run_id, key, value)

    def trial(trial_id: str, status: str, score: float = None) -> str:
        run = client.create_run(experiment_id, run_name=f"trial-{trial_id}",
                                tags={"mlflow.parentRunId": parent.info.run_id, "tuner.trial_id": trial_id, "tuner.cv_folds": "3"})
        client.log_param(run.info.run_id, "hp.model.units", {"0": "16", "1": "64", "2": "32"}[trial_id])
        client.log_metric(run.info.run_id, "fold0.val_loss", 1.0)
        if score is not None:
            client.log_metric(run.info.run_id, "trial_score", score)
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    trial("1", "KILLED")  # cut off by a SIGTERM, then by a kill -9 (marked KILLED on resume), then run again
    trial("1", "KILLED")
    best, second, third = trial("0", "FINISHED", 0.25), trial("1", "FINISHED", 0.5), trial("2", "KILLED")
    client.set_terminated(parent.info.run_id, "FINISHED")

    capsys.readouterr()
    assert cli.main(["compare", parent.info.run_id, "--no-log", f"tracking.uri={store_uri}"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\s*\d+ ", line)]
    assert len(rows) == 3 and sum("trial 2 (run trial-1)" in r for r in rows) == 1, rows  # one row a trial
    assert "FINISHED" in next(r for r in rows if "trial 2 (run trial-1)" in r)

    assert cli.main(["compare", second, best, "--no-log", f"tracking.uri={store_uri}"]) == 0
    out = capsys.readouterr().out
    assert "best: trial 1 (run trial-0) (trial_score=0.2500" in out  # the search's own order: the lowest loss first
    assert cli.main(["compare", third, second, "--no-log", f"tracking.uri={store_uri}"]) == 0  # one cut off before its score
    assert "trial_score" in capsys.readouterr().out.splitlines()[0]

    client.log_metric(parent.info.run_id, "test_accuracy", 0.9)
    trained = []
    for units, accuracy in (("16", 0.8), ("64", 0.7)):  # the search's rerun, and another train run
        run = client.create_run(experiment_id, run_name=f"train-{units}", tags={"pipeline.command": "train"})
        client.log_param(run.info.run_id, "model.units", units)
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        client.set_terminated(run.info.run_id, "FINISHED")
        trained.append(run.info.run_id)
    assert cli.main(["compare", parent.info.run_id, *trained, "--no-log", f"tracking.uri={store_uri}"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert re.search(r"search .* 16$", next(line for line in rows if " search " in line))  # its final model's units, not the 128 it started from

    assert cli.main(["compare", second, third, "--no-log", f"tracking.uri={store_uri}", "--metric", "bleu"]) == 2
    assert "they have: trial_score, fold0.*" in capsys.readouterr().err


def test_compare_s_terminal_table_fits_and_names_what_it_leaves_out() -> None:
    """Comparing a search with a train run differs in every ``tuner.*`` and ``search_space.*``
    param (the search's) and Keras's ``optimizer_*`` (the train run's): the terminal's table was
    hundreds of characters wide. Params only some runs have are named by prefix under it, the
    rest are cut from the right to the terminal's width, and the logged table keeps every one."""
    from pipeline.compare import table, terminal_view
    from pipeline.tracking import RunRecord

    search = RunRecord("s" * 32, "search", "FINISHED", "1", {}, {
        "model.units": "192", "seed": "42", "dataset.name": "bbc_news", "tuner.name": "random", "tuner.max_trials": "10",
        "search_space.model.units.max": "256", **{f"training.long_setting_{i}": f"value-{i}" for i in range(12)}},
        {"test_accuracy": 0.94})
    train = RunRecord("t" * 32, "train", "FINISHED", "1", {}, {
        "model.units": "128", "seed": "1", "dataset.name": "sst2", "optimizer_name": "adam", "optimizer_beta_1": "0.9",
        **{f"training.long_setting_{i}": f"other-{i}" for i in range(12)}},
        {"test_accuracy": 0.53})
    frame = table([search, train], "test_accuracy", "max")
    assert {"tuner.name", "optimizer_name", "training.long_setting_11"} <= set(frame.columns)  # the logged CSV: all

    view, notes = terminal_view(frame, 5, 120)
    lines = view.to_string(index=False).splitlines()
    assert max(map(len, lines)) <= 120 and len(lines) == 3
    assert {"dataset.name", "model.units", "seed"} <= set(view.columns)  # alphabetical, first to stay
    assert not any(c.startswith(("tuner.", "search_space.", "optimizer_")) for c in view.columns)
    assert notes[0] == "also differ, set on only some of these runs: optimizer_* (2), search_space.model.units.max, tuner.* (2)"
    cut = [c for c in frame.columns[5:] if c.startswith("training.") and c not in view.columns]
    assert cut and notes[1] == f"also differ, left out to fit 120 columns: training.* ({len(cut)})"

    wide, notes = terminal_view(frame, 5, 10_000)  # all that every run has fits: one note
    assert "training.long_setting_11" in wide.columns and len(notes) == 1


def test_the_code_digest_follows_the_code_and_configs_not_their_caches(tmp_path: Path) -> None:
    package, conf = tmp_path / "pipeline", tmp_path / "conf"
    (package / "__pycache__").mkdir(parents=True)
    (conf / "model").mkdir(parents=True)
    (package / "train.py").write_text("EPOCHS = 3\n")
    (conf / "model" / "lstm.yaml").write_text("units: 64\n")
    roots = {"pipeline": package, "conf": conf}
    first = provenance.code_digest(roots)
    (package / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0compiled")
    (conf / "notes.txt").write_text("not a config\n")
    assert provenance.code_digest(roots) == first
    (conf / "model" / "lstm.yaml").write_text("units: 128\n")
    assert provenance.code_digest(roots) != first
    (conf / "model" / "lstm.yaml").write_text("units: 64\n")
    (package / ".#train.py").symlink_to(tmp_path / "gone")  # an editor's lock file (Emacs): a dangling link
    assert provenance.code_digest(roots) == first
    (package / "train.py").rename(package / "fit.py")  # the same bytes under another name is other code
    assert provenance.code_digest(roots) != first
