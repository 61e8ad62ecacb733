"""`pipeline tune`: a real Keras Tuner search, tracked as a parent run with a child per trial."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, List

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import SHRINK, SPACE, curve, run_cli, runs_in, wait_for, write_sentiment_csv
from pipeline import compare, limits, rerun, tracking, tune
from pipeline.errors import ConfigError

#: The baseline off: it has its own tests (tests/test_baseline.py), and the first search here keeps it on.
SMALL = [*SHRINK, "dataset.max_samples=200", *SPACE, "baseline.enabled=false"]


def _runs(store_uri: str, refits: bool = False):
    """(client, parent runs, child runs): trials and retrainings, with the final model's refit runs
    only when ``refits`` (every search has them)."""
    runs = runs_in(store_uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and (refits or "refit.seed" not in r.data.tags)]
    return MlflowClient(store_uri), parents, children


def _killed_in_then_resumed(cfg: Any, module: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search stopped (Ctrl-C) as it calls ``module.name``, then the same search run again."""
    real = getattr(module, name)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, name, killed)
    with pytest.raises(KeyboardInterrupt):
        tune.run(cfg)
    monkeypatch.setattr(module, name, real)
    tune.run(cfg)

def _as_cut_off_in_its_final_step(cfg: Any) -> None:
    """A finished search's state as a process killed in its final step leaves it: without the record
    of its end (written as it ends), so the same command makes its final model again."""
    import json

    from pipeline.tuning.project import STATE_FILE

    (state_file,) = Path(cfg.tuner.directory).rglob(STATE_FILE)
    state = json.loads(state_file.read_text())
    del state["finished"]
    state_file.write_text(json.dumps(state))


def _versions(client: MlflowClient, name: str) -> List[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))


#: conf/debug/fast.yaml less its `training.verbose: 0`, so a search's own default for Keras's
#: per-epoch lines is what runs, and with two epochs (Keras has no `Epoch 1/1` line).
SMALL_AS_IS = ["dataset.max_samples=200", "training.epochs=2", "training.batch_size=32", "model.units=8", "model.embedding_dim=8",
               "dataset.vocab_size=2000", "baseline.C=[1.0]", "baseline.char_ngrams=[3,3]",
               "search_space=tiny", "tuner.cv_folds=1"]  # and the default final model (three refits averaged)
START = re.compile(r"trial (\d+)/(\d+) (units=\d+ embedding_dim=\d+) \.\.\.")
END = re.compile(r"trial (\d+)/(\d+) (units=\d+ embedding_dim=\d+) val_accuracy=(\d\.\d{4}) \(best (\d\.\d{4}), trial (\d+)\) "
                 r"\d+ s(, about \d+ (s|min) left)?")


def test_search_is_a_parent_run_with_a_child_per_trial_and_says_each_trial(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(["tune", *SMALL_AS_IS, "tuner.max_trials=3"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "search " in result.stdout and "3 trials" in result.stdout

    client, parents, children = _runs(store_uri)
    assert len(parents) == 1 and len(children) == 3
    # and the final model: the best configuration refit with the search's seed and the two after it
    refits = [r for r in _runs(store_uri, refits=True)[2] if "refit.seed" in r.data.tags]
    assert sorted(r.data.tags["refit.seed"] for r in refits) == ["42", "43", "44"]
    # on the label alone, said as the config's params say it (null)
    assert {r.data.tags["refit.distill.alpha"] for r in refits} == {r.data.params["training.distill.alpha"] for r in refits} == {"null"}
    assert ", averaged over 3 seeds" in result.stdout
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["tuner.trial_id"] for c in children) == ["0", "1", "2"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"hp.model.units", "hp.model.embedding_dim"} <= set(child.data.params)
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")] in ([0], [0, 1])
        assert child.data.tags["tuner.project"] == "bbc_news-lstm-seed42"
        assert not client.list_artifacts(child.info.run_id), "no model (or anything else) logged per trial"

    # the parent: config and space as params, the ranking, the best values, the evaluated best model
    assert parent.data.params["search_space.model.units.max"] == "24" and parent.data.params["tuner.name"] == "random"
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/trials.csv", str(tmp_path)))
    assert len(table) == 3 and table["rank"].tolist() == [1, 2, 3]
    assert table["score"].is_monotonic_decreasing
    top = max(c.data.metrics["trial_score"] for c in children)
    assert parent.data.metrics["best_score"] == pytest.approx(top)
    # the best trial's values (two trials may tie on a small validation split)
    best = [c for c in children if c.data.tags["tuner.trial_id"] == parent.data.tags["best_trial_id"]]
    assert len(best) == 1 and best[0].data.metrics["trial_score"] == pytest.approx(top)
    assert parent.data.tags["best.model.units"] == best[0].data.params["hp.model.units"]
    assert "test_accuracy" in parent.data.metrics and "test_f1_macro" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/search_scores.png" in artifacts
    assert _versions(client, "lstm-bbc_news") == ["1"]
    # the first version is the champion; it says where it came from and how it scored
    first = client.get_model_version_by_alias("lstm-bbc_news", "champion")
    assert str(first.version) == "1" and set(first.aliases) == {"candidate", "champion"}
    assert first.tags["search_run_id"] == parent.info.run_id == first.run_id
    assert first.tags["data_fingerprint"] == parent.data.tags["data_fingerprint"]
    assert float(first.tags["test_accuracy"]) == pytest.approx(parent.data.metrics["test_accuracy"], abs=1e-5)
    assert "registered lstm-bbc_news v1 is now @champion" in result.stdout
    assert parent.data.tags["registered_model"] == "lstm-bbc_news/1"

    # each trial said as it starts and ends; Keras's per-epoch lines (`Epoch 1/2`, `8/8 - 1s - ...
    # val_loss: 0.6838`) would bury them
    assert "Epoch 1/" not in result.stdout + result.stderr and "val_loss:" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 6, result.stdout
    starts, ends = [START.fullmatch(line) for line in lines[::2]], [END.fullmatch(line) for line in lines[1::2]]
    assert all(starts) and all(ends), lines
    assert [(m[1], m[2]) for m in starts] == [(m[1], m[2]) for m in ends] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert [m[3] for m in starts] == [m[3] for m in ends]  # each end line is its trial's
    assert all(m[7] for m in ends[:2]) and not ends[2][7]  # the time left, until the last trial
    # what the lines say is what the trials were: their values, scores and the best so far
    trial_run = {str(int(c.data.tags["tuner.trial_id"]) + 1): c for c in children}
    scores = {}
    for m in ends:
        run = trial_run[m[1]]
        assert m[3] == f"units={run.data.params['hp.model.units']} embedding_dim={run.data.params['hp.model.embedding_dim']}"
        assert float(m[4]) == pytest.approx(run.data.metrics["trial_score"], abs=5e-5)
        scores[m[1]] = float(m[4])
        assert float(m[5]) == max(scores.values()) and scores[m[6]] == float(m[5])

    # a new search (overwrite is explicit) registers a new version, the candidate; the champion
    # moves to it only if it scored better on test on the same data
    # (training.verbose=2 shows Keras's per-epoch lines, and the trial lines still say each trial)
    args = ["tune", *SMALL_AS_IS, "tuner.overwrite=true", "tuner.final.ensemble.seeds=[]", "training.verbose=2"]  # (one refit: faster)
    again = run_cli([*args, "tuner.max_trials=1"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Epoch 1/2" in again.stdout and "val_loss:" in again.stdout
    lines = [line for line in again.stdout.splitlines() if line.startswith("trial ")]
    assert [line.split()[1] for line in lines] == ["1/1", "1/1"] and END.fullmatch(lines[1]), lines
    assert _versions(client, "lstm-bbc_news") == ["1", "2"]
    second = client.get_model_version("lstm-bbc_news", "2")
    assert "candidate" in second.aliases
    better = float(second.tags["test_accuracy"]) > float(first.tags["test_accuracy"])
    champion = client.get_model_version_by_alias("lstm-bbc_news", "champion")
    assert str(champion.version) == ("2" if better else "1")
    assert ("is now @champion" if better else "@champion stays v1") in again.stdout


def test_a_bayesian_search(make_cfg, store_uri: str, capsys: pytest.CaptureFixture) -> None:
    """(Hyperband: test_hyperband_ranks_fold_scored_trials_by_their_mean.)"""
    cfg = make_cfg(*SMALL, "tuner=bayesian", "tuner.max_trials=2", "tuner.num_initial_points=1", "training.epochs=2",
                   "tracking.log_model=false", config_name="tune")
    tune.run(cfg)
    _, parents, children = _runs(store_uri)
    assert len(parents) == 1 and parents[0].data.tags["tuner.name"] == "bayesian"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)  # one random point, one guided
    assert len({c.data.tags["tuner.trial_id"] for c in children}) == len(children)
    ends = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ") and "val_accuracy=" in line]
    assert len(ends) == len(children) and all(re.match(r"trial [12]/2 ", e) for e in ends), ends


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_seed_variance_reruns_the_top_configurations_with_each_seed(make_cfg, store_uri: str, tmp_path: Path) -> None:
    cfg = make_cfg(
        *SMALL, "tuner.max_trials=3", "training.epochs=2", "tracking.log_model=false",
        "tuner.final.seed_variance.top_k=2", "tuner.final.seed_variance.seeds=[1,2]", config_name="tune",
    )
    tune.run(cfg)
    client, (parent,), children = _runs(store_uri)
    trials = [c for c in children if "tuner.trial_id" in c.data.tags]
    checks = [c for c in children if "seed_variance.trial_id" in c.data.tags]
    assert len(trials) == 3 and len(checks) == 4 and all(c.info.status == "FINISHED" for c in checks)
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/seed_variance.csv", str(tmp_path)))
    assert len(table) == 2
    # the top two trials of the search, each trained with seeds 1 and 2
    ranked = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/trials.csv", str(tmp_path)))
    assert set(table["trial_id"].astype(int)) == set(ranked["trial_id"].astype(int)[:2])
    for row in table.itertuples():
        scores = sorted(c.data.metrics["trial_score"] for c in checks if c.data.tags["seed_variance.trial_id"] == str(row.trial_id))
        assert len(scores) == 2
        assert row.val_accuracy_mean == pytest.approx(sum(scores) / 2)
        assert row.val_accuracy_std == pytest.approx(abs(scores[0] - scores[1]) / 2 ** 0.5)
    assert parent.data.metrics["seed_variance.best_mean"] == pytest.approx(table["val_accuracy_mean"].max())
    assert "seed_variance.warning" in parent.data.tags

    # the same command after a crash mid-way: the run its process left RUNNING is closed, all run again
    client.update_run(checks[0].info.run_id, status="RUNNING")
    _as_cut_off_in_its_final_step(cfg)
    tune.run(cfg)
    statuses = Counter(r.info.status for r in runs_in(store_uri) if "seed_variance.seed" in r.data.tags)
    assert statuses == {"FINISHED": 7, "KILLED": 1}, statuses


def test_an_ensemble_averages_the_best_trial_with_its_configuration_retrained_per_seed(make_cfg, store_uri: str, tmp_path: Path, capsys) -> None:
    import mlflow
    import numpy as np

    search = [*SMALL, "tuner.max_trials=2", "training.epochs=2", "tuner.final.ensemble.seeds=[1,2]", "tuner.final.refit=false"]
    tune.run(make_cfg(*search, config_name="tune"))
    client, (parent,), children = _runs(store_uri)
    best = parent.data.tags["best_trial_id"]
    members = {c.data.tags["ensemble.seed"]: c for c in children if "ensemble.seed" in c.data.tags}
    assert sorted(members) == ["1", "2"]
    for member in members.values():  # the best configuration, trained again: one child run per seed
        assert member.info.status == "FINISHED" and member.data.tags["ensemble.trial_id"] == best
        assert member.data.params["hp.model.units"] == parent.data.tags["best.model.units"]
        assert len(client.get_metric_history(member.info.run_id, "val_accuracy")) == 2
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/ensemble.csv", str(tmp_path)))
    assert table["member"].tolist() == [f"trial {int(best) + 1} (run trial-{best})", "seed 1", "seed 2", "average"]
    assert parent.data.metrics["ensemble.members"] == 3
    assert parent.data.metrics["ensemble.val_accuracy"] == pytest.approx(table["val_accuracy"].iloc[-1])
    assert 0.0 <= parent.data.metrics["best_trial.test_accuracy"] <= 1.0
    assert compare.main([parent.info.run_id, "--no-log", f"tracking.uri={store_uri}"]) == 0  # overrides after options
    assert f"trial {int(best) + 1} seed 2 (ensemble)" in capsys.readouterr().out
    # a search's trials by its objective as it ranks them; by a loss, lowest first (found by a helper's hunt: highest first)
    import argparse

    for metric, direction in ((None, "max"), ("val_loss", "min"), ("val_accuracy", "max")):
        asked = argparse.Namespace(run_ids=[parent.info.run_id], metric=metric, direction=None, experiment=None)
        assert compare._select(store_uri, asked, "")[3] == direction, metric

    # the logged model is the average: its probabilities are the mean of its three members'
    mlflow.set_tracking_uri(store_uri)
    try:
        logged = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    texts = ["a fine and moving film", "dull, slow and far too long"]
    served = logged.predict(pd.DataFrame({"text": texts}))
    keras_model = logged.unwrap_python_model().model
    ids = keras_model.get_layer("vectorizer")(np.array(texts, dtype=object))
    ensemble = keras_model.get_layer("ensemble")
    mean = np.mean([ensemble.get_layer(f"member_{i}").predict(ids, verbose=0) for i in range(3)], axis=0)
    assert np.allclose(ensemble.predict(ids, verbose=0), mean, atol=1e-6)
    assert served.shape[0] == 2

    # resumed after a crash mid-ensemble: a member whose weights were saved is kept, the other trained again
    folder = Path(parent.data.tags["tuner.directory"]) / "ensemble"
    (folder / f"trial{best}-seed2.weights.h5").unlink()
    for member in members.values():
        client.update_run(member.info.run_id, status="RUNNING")
    tune.run(make_cfg(*search, "tracking.log_model=false", config_name="tune"))  # (the model logged above)
    runs = {}
    for run in (r for r in runs_in(store_uri) if "ensemble.seed" in r.data.tags):
        runs.setdefault(run.data.tags["ensemble.seed"], []).append(run.info.status)
    assert runs == {"1": ["FINISHED"], "2": ["FINISHED", "KILLED"]}, runs
    assert (folder / f"trial{best}-seed2.weights.h5").is_file()


def _rates(client: MlflowClient, run) -> list:
    return curve(client, run.info.run_id, "learning_rate")


def test_the_final_model_is_the_best_configuration_refit_on_train_and_validation(make_cfg, store_uri: str, tmp_path: Path, capsys) -> None:
    # (a member named as untrained is only named here: training it again, the default, has its own test)
    cfg = make_cfg(*SMALL, "tuner.max_trials=2", "training.epochs=3", "tuner.final.ensemble.seeds=[1]", "tuner.final.distill.alpha=0.5",
                   "training.lr_schedule=cosine", "tuner.final.retrain_untrained=false", "tracking.log_model=false", config_name="tune")
    tune.run(cfg)
    client, (parent,), children = _runs(store_uri, refits=True)
    best = parent.data.tags["best_trial_id"]
    (trial,) = [c for c in children if c.data.tags.get("tuner.trial_id") == best]
    # as many epochs as the best trial took to its best validation accuracy (the first best epoch)
    history = curve(client, trial.info.run_id, "val_accuracy")
    epochs = history.index(max(history)) + 1
    refits = {c.data.tags["refit.seed"]: c for c in children if "refit.seed" in c.data.tags}
    lr = float(cfg.training.learning_rate)
    assert sorted(refits) == ["1", "42"]  # the search's seed, and each ensemble seed
    for run in refits.values():
        assert run.info.status == "FINISHED" and run.data.tags["refit.trial_id"] == best
        assert run.data.tags["refit.epochs"] == str(epochs) and run.data.params["training.fit_on"] == "train_val"
        # the trials learned from the label alone, the refits from the baseline too (tuner.final.distill)
        assert run.data.tags["refit.distill.alpha"] == "0.5" and run.data.params["training.distill.alpha"] == "0.5"
        assert run.data.params["hp.model.units"] == parent.data.tags["best.model.units"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(epochs))
        assert "val_loss" not in run.data.metrics  # nothing held out: validation is trained on
        # the cosine schedule spans the refit's own epochs: it ends at a low rate, not mid-step
        assert _rates(client, run) == pytest.approx([lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)])
    # a trial's spans training.epochs, whenever early stopping ends it
    assert _rates(client, trial) == pytest.approx([lr * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(len(history))])
    metrics = parent.data.metrics
    assert metrics["refit.epochs"] == epochs and metrics["refit.members"] == 2
    assert 0.0 <= metrics["best_trial.test_accuracy"] <= 1.0  # the search's own best model stays on record
    assert metrics["test_accuracy_ci_low"] < metrics["test_accuracy"] < metrics["test_accuracy_ci_high"]
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/refit.csv", str(tmp_path)))
    assert table["seed"].tolist() == [42, 1] and table["epochs"].tolist() == [epochs, epochs]
    out, err = capsys.readouterr()
    # a member far behind the others on its own training texts is named on the run and in a warning (on stderr)
    untrained = parent.data.tags["refit.untrained"]
    warned = [line for line in err.splitlines() if line.startswith("warning: refit ") and "may not have trained" in line]
    assert (untrained == "none") == (not warned)
    assert all(f"warning: {note} (search/refit.csv)" in err for note in ([] if untrained == "none" else untrained.split("; ")))
    assert all(line.endswith("it may not have trained, and the final model averages it in (search/refit.csv)") for line in warned)
    # named as the trial lines number it (Keras Tuner's id + 1) and as its MLflow run is named
    assert f"trial {int(best) + 1}'s configuration (run trial-{best}) refit on train+val for {epochs} epoch(s), averaged over 2 seeds" in out
    assert re.search(rf"^trial {int(best) + 1}/\d+ .* val_accuracy=", out, re.M)
    assert f"test_accuracy={metrics['test_accuracy']:.4f} [{metrics['test_accuracy_ci_low']:.4f}, " in out
    # a search's comparison ranks its trials; the refit has no validation score to rank by
    frame = compare.table([tracking.fetch_run(store_uri, c.info.run_id) for c in children if "tuner.trial_id" in c.data.tags],
                          "trial_score", "max")
    assert len(frame) == 2

    # resumed after a crash mid-refit: a member whose weights were saved is kept, the other trained again
    folder = Path(parent.data.tags["tuner.directory"]) / "refit"
    (folder / f"trial{best}-epochs{epochs}-distill0.5-seed1.weights.h5").unlink()
    for run in refits.values():
        client.update_run(run.info.run_id, status="RUNNING")
    _as_cut_off_in_its_final_step(cfg)
    tune.run(cfg)
    runs = {}
    for run in (r for r in runs_in(store_uri) if "refit.seed" in r.data.tags):
        runs.setdefault(run.data.tags["refit.seed"], []).append(run.info.status)
    assert runs == {"42": ["FINISHED"], "1": ["FINISHED", "KILLED"]}, runs

    # a rerun of the search replays its refit with the search's seed, and says it is one member
    capsys.readouterr()
    rerun.run(parent.info.run_id, [], tracking_uri=store_uri)
    out, err = capsys.readouterr()
    assert "final model averaged 2 refits; this reruns the one with the search's seed (42)" in err  # a warning
    again = [r for r in runs_in(store_uri) if r.data.tags.get("rerun_of") == parent.info.run_id]
    assert len(again) == 1 and again[0].data.tags["rerun_of_run"] == refits["42"].info.run_id
    # with the refit's own targets (tuner.final.distill), not the trials' label alone: the same epochs
    assert again[0].data.params["training.distill.alpha"] == "0.5"
    assert curve(client, again[0].info.run_id, "loss") == pytest.approx(curve(client, refits["42"].info.run_id, "loss"), abs=1e-6)
    assert f"(original, averaged over 2 refits {parent.data.metrics['test_accuracy']:.4f})" in out


def test_training_on_train_and_validation_never_reaches_the_test_split(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text of train and validation is trained on, once per epoch, and no test text ever."""
    from collections import Counter

    from pipeline import data, experiment
    from pipeline.model import build_model

    csv = write_sentiment_csv(tmp_path / "reviews.csv")
    cfg = make_cfg("dataset=files", f"dataset.path={csv}", "training.fit_on=train_val", "training.epochs=2")
    prepared = experiment.prepare(cfg)

    def rows(ids) -> Counter:
        return Counter(tuple(int(t) for t in row if t) for row in ids)

    seen: Counter = Counter()
    real = data.make_datasets

    def spy(encoded, *args, **kwargs):
        out = real(encoded, *args, **kwargs)
        for x, _ in out["train"]:
            seen.update(rows(x.numpy()))
        assert set(out) == {"train"}  # no validation set to score or stop on
        return out

    monkeypatch.setattr(data, "make_datasets", spy)
    history = experiment.fit(build_model(cfg, prepared.shape), prepared, cfg.training, cfg.seed)
    assert seen == rows(prepared.encoded["train"][0]) + rows(prepared.encoded["val"][0])
    assert not set(rows(prepared.encoded["test"][0])) & set(seen)
    assert len(history.history["loss"]) == 2 and not any(k.startswith("val_") for k in history.history)


def test_a_search_cannot_score_trials_it_trains_on_validation(make_cfg) -> None:
    with pytest.raises(ConfigError, match="training.fit_on must be train"):
        tune.run(make_cfg(*SMALL, "training.fit_on=train_val", config_name="tune"))


@pytest.mark.parametrize("seed, expected", [(42, [43, 44]), (1, [2, 3]), (2**32 - 1, [0, 1])])
def test_the_default_ensemble_takes_the_two_seeds_after_the_search_s(make_cfg, seed: int, expected: list) -> None:
    # so that `-m seed=1,2,3` composes a valid search for every job, none of them refused
    cfg = make_cfg(f"seed={seed}", config_name="tune")
    assert list(cfg.tuner.final.ensemble.seeds) == expected
    limits.tuner(cfg)  # and it is a valid search


@pytest.mark.parametrize("seeds", ["[1,1]", "[42]"])
def test_ensemble_seeds_must_be_new_seeds(make_cfg, seeds: str) -> None:
    cfg = make_cfg(*SMALL, f"tuner.final.ensemble.seeds={seeds}", config_name="tune")
    with pytest.raises(ConfigError, match="tuner.final.ensemble.seeds must be different seeds"):
        tune.run(cfg)


def test_the_seed_noise_warning_compares_the_gap_with_the_spread() -> None:
    from pipeline.tuning.final import seed_noise_warning

    table = pd.DataFrame({"trial_id": ["3", "1"], "val_accuracy_mean": [0.80, 0.79], "val_accuracy_std": [0.02, 0.005]})
    warning = seed_noise_warning(table, "val_accuracy")
    assert warning is not None and "trial 4 (run trial-3) and trial 2 (run trial-1)" in warning and "0.0100" in warning
    clear = table.assign(val_accuracy_std=[0.004, 0.005])
    assert seed_noise_warning(clear, "val_accuracy") is None


def test_a_refit_far_behind_its_peers_on_its_own_training_texts_is_reported() -> None:
    """The README's seed-1 search: one refit ended at training accuracy 0.7832 where its peers
    reached 0.96-0.98. Seed 3's spread (0.94-0.996) is a normal one; a resumed search's members
    trained before the resume have no record, and one member has no peers."""
    from pipeline.tuning.final import untrained

    def members(*accuracy: float) -> pd.DataFrame:
        return pd.DataFrame({"member": [f"seed {i + 1}" for i in range(len(accuracy))], "accuracy": list(accuracy)})

    assert untrained(members(0.7832, 0.9603, 0.9807)) == [(0, "refit seed 1 ended at training accuracy 0.7832, against 0.9807 for the best other member")]
    assert untrained(members(0.9963, 0.9885, 0.9389)) == []
    # two of three that did not train are both named (against the median of the others, neither was:
    # bench/refit_retry.py's seeds 1-3 at BBC News 64/64, 4 epochs)
    assert [k for k, _ in untrained(members(0.8019, 0.9777, 0.8230))] == [0, 2]
    assert untrained(members(0.70, 0.95)) == [(0, "refit seed 1 ended at training accuracy 0.7000, against 0.9500 for the best other member")]
    assert untrained(members(0.70, float("nan"), 0.95)) == []
    assert untrained(members(0.30)) == []


def test_a_member_trained_in_anothers_place_takes_the_next_seed_not_used() -> None:
    from pipeline.limits import MAX_SEED
    from pipeline.tuning.final import next_seed

    assert next_seed({42, 43, 44}) == 45 and next_seed({1, 5}) == 6
    # seed=MAX_SEED's members are MAX_SEED, 0 and 1 (seeds_after wraps): a seed NumPy accepts, unused
    assert next_seed({MAX_SEED, 0, 1}) == 2 and next_seed({MAX_SEED - 1, MAX_SEED, 0}) == 1


def test_a_refit_that_may_not_have_trained_is_trained_again_with_the_next_seed(make_cfg, store_uri: str, tmp_path: Path,
                                                                              capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A named member is replaced in the average by a fit with the next seed not used yet, in a run
    tagged ``refit.replaces``; a resumed search decides the same from the members' kept records."""
    from pipeline import experiment
    from pipeline.model import build_model, class_probabilities
    from pipeline.search_space import with_values
    from pipeline.tuning import final

    monkeypatch.setattr(final, "UNTRAINED_MARGIN", -2.0)  # every member named, whatever it reached
    cfg = make_cfg(*SMALL, "tuner.max_trials=1", "training.epochs=2", "tuner.final.ensemble.seeds=[1]", "tracking.log_model=false",
                   config_name="tune")
    tune.run(cfg)
    client, (parent,), children = _runs(store_uri, refits=True)
    refits = {c.data.tags["refit.seed"]: c for c in children if "refit.seed" in c.data.tags}
    assert sorted(refits) == ["1", "42", "43", "44"]
    assert (refits["43"].data.tags["refit.replaces"], refits["44"].data.tags["refit.replaces"]) == ("42", "1")
    assert "refit.replaces" not in refits["42"].data.tags and "refit.replaces" not in refits["1"].data.tags
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/refit.csv", str(tmp_path)))
    assert table["seed"].tolist() == [42, 1, 43, 44] and table["averaged"].tolist() == [False, False, True, True]
    assert table["replaced_by"].fillna(0).astype(int).tolist() == [43, 44, 0, 0]
    metrics, tags = parent.data.metrics, parent.data.tags
    assert metrics["refit.members"] == 2
    notes = tags["refit.untrained"].split("; ")
    assert [n.split(" ended ")[0] for n in notes] == ["refit seed 42", "refit seed 1"]
    assert "seed 43 (training accuracy " in notes[0] and "seed 44 (training accuracy " in notes[1]
    out, err = capsys.readouterr()
    assert all(f"warning: {note} (search/refit.csv)" in err for note in notes)
    assert "averaged over 2 seeds" in out

    # the final model tested is the average of the two fits that replaced the others
    values = {k.removeprefix("best."): v for k, v in tags.items() if k.startswith("best.") and k != "best_trial_id"}
    refit_cfg = with_values(cfg, {k: int(v) for k, v in values.items()})
    prepared = experiment.prepare(refit_cfg)
    x_test, y_test = prepared.encoded["test"]
    folder = Path(tags["tuner.directory"]) / "refit"
    probabilities = []
    for seed in (43, 44):
        model = build_model(refit_cfg, prepared.shape)
        (path,) = folder.glob(f"*-seed{seed}.weights.h5")
        model.load_weights(str(path))
        probabilities.append(class_probabilities(model, x_test))
    assert float(np.mean(np.mean(probabilities, axis=0).argmax(1) == y_test)) == pytest.approx(metrics["test_accuracy"])

    # resumed after a crash in the replacement's fit: the records of the others decide as before
    (folder / path.name).unlink()
    _as_cut_off_in_its_final_step(cfg)
    tune.run(cfg)
    runs = {}
    for run in (r for r in runs_in(store_uri) if "refit.seed" in r.data.tags):
        runs.setdefault(run.data.tags["refit.seed"], []).append(run.info.status)
    assert {seed: len(statuses) for seed, statuses in runs.items()} == {"42": 1, "1": 1, "43": 1, "44": 2}, runs

    # a rerun replays the refit with the search's seed, and says it was replaced in the average
    capsys.readouterr()
    rerun.run(parent.info.run_id, [], tracking_uri=store_uri)
    assert "(it may not have trained, and seed 43 was averaged in its place)" in capsys.readouterr().err

    # resumed once more with `tuner.final.retrain_untrained=false`: the final model averages the
    # search seed's refit in, as search/refit.csv records, and a rerun says no other seed took its place
    tune.run(make_cfg(*SMALL, "tuner.max_trials=1", "training.epochs=2", "tuner.final.ensemble.seeds=[1]", "tracking.log_model=false",
                      "tuner.final.retrain_untrained=false", config_name="tune"))
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/refit.csv", str(tmp_path / "again")))
    assert table["seed"].tolist() == [42, 1] and table["averaged"].tolist() == [True, True]
    capsys.readouterr()
    rerun.run(parent.info.run_id, [], tracking_uri=store_uri)
    out = capsys.readouterr().err  # a warning
    assert "this reruns the one with the search's seed (42), whose test accuracy is its own" in out
    assert "in its place" not in out


def test_sigterm_mid_trial_marks_the_runs_killed_and_exits_143(tmp_path: Path, store_uri: str) -> None:
    args = ["tune", *SMALL, "tuner.max_trials=2", "training.epochs=15", "training.early_stopping.enabled=false", "tracking.log_model=false"]
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    MlflowClient(store_uri).search_experiments()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def first_trial_mid_epoch():
            _, _, children = _runs(store_uri)
            running = [c for c in children if c.info.status == "RUNNING"]
            return running and MlflowClient(store_uri).get_metric_history(running[0].info.run_id, "loss")

        wait_for(first_trial_mid_epoch, 240, "a trial to be training")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated" in stderr and "Traceback" not in stderr
    _, parents, children = _runs(store_uri)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert children and all(c.info.status in ("KILLED", "FINISHED") for c in children)
    assert any(c.info.status == "KILLED" for c in children)


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_kill_9_mid_trial_then_the_same_command_resumes(tmp_path: Path, store_uri: str) -> None:
    # long enough trials (15 epochs) that the kill lands mid-trial
    args = ["tune", *SMALL, "tuner.max_trials=3", "training.epochs=15", "training.early_stopping.enabled=false", "tracking.log_model=false"]
    # create the store first: two processes migrating a new SQLite store at once collide
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    MlflowClient(store_uri).search_experiments()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def second_trial_mid_epoch():
            _, _, children = _runs(store_uri)
            running = [c for c in children if c.info.status == "RUNNING" and c.data.tags.get("tuner.trial_id") == "1"]
            return running and MlflowClient(store_uri).get_metric_history(running[0].info.run_id, "loss")

        wait_for(second_trial_mid_epoch, 240, "trial 1 to be training")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, parents, children = _runs(store_uri)
    assert [c.info.status for c in children if c.data.tags["tuner.trial_id"] == "1"] == ["RUNNING"]

    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming search" in result.stdout and "1 interrupted trial run(s) marked KILLED" in result.stdout

    _, parents, children = _runs(store_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    statuses = Counter((c.data.tags["tuner.trial_id"], c.info.status) for c in children)
    assert statuses == Counter({("0", "FINISHED"): 1, ("1", "KILLED"): 1, ("1", "FINISHED"): 1, ("2", "FINISHED"): 1})
    assert parents[0].data.metrics["trials_completed"] == 3.0


def test_a_changed_search_never_silently_reloads_the_old_one(make_cfg, tmp_path: Path, store_uri: str) -> None:
    base = [*SMALL, "tuner.max_trials=1", "tracking.log_model=false"]
    tune.run(make_cfg(*base, config_name="tune"))
    changed = make_cfg(*base, "search_space.model.units={type:int,min:8,max:40,step:8}", config_name="tune")
    with pytest.raises(ConfigError, match=r"another search \(its search space differs\).*tuner.overwrite=true"):
        tune.run(changed)
    with pytest.raises(ConfigError, match=r"another search \(its objective"):
        tune.run(make_cfg(*base, "tuner.objective=val_loss", "tuner.direction=min", config_name="tune"))
    tune.run(make_cfg(*base, "search_space.model.units={type:int,min:8,max:40,step:8}", "tuner.on_change=new_project", config_name="tune"))
    projects = sorted(p.name for p in (tmp_path / "tuner").iterdir())
    assert len(projects) == 2 and projects[0] == "bbc_news-lstm-seed42" and projects[1].startswith("bbc_news-lstm-seed42-")
    _, parents, _ = _runs(store_uri)
    assert len(parents) == 2


def test_a_failing_trial_is_a_failed_run_and_the_search_goes_on(make_cfg, store_uri: str, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A dropout of 1.5 is refused before the search by the model built at each end of the space
    # (pipeline/validate.py); without that check, it is a trial that fails as one that runs out of
    # memory would: what this test is about.
    from pipeline import search_space, validate

    monkeypatch.setattr(validate, "search_space", lambda cfg, models=True: search_space.compile_space(cfg.search_space) if models else None)
    cfg = make_cfg(
        *SMALL, "+search_space.model.dropout={type:choice,values:[0.0,1.5]}", "tuner.max_trials=6",
        "tuner.max_consecutive_failed_trials=6",
        "tracking.log_model=false", config_name="tune",
    )
    tune.run(cfg)
    _, parents, children = _runs(store_uri)
    failed = [c for c in children if c.info.status == "FAILED"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert failed and finished and parents[0].info.status == "FINISHED"
    assert all(c.data.params["hp.model.dropout"] == "1.5" for c in failed)
    assert all(c.data.params["hp.model.dropout"] == "0.0" for c in finished)
    assert all("error" in c.data.tags for c in failed)
    # the search's own line for each: FAILED and why, in one line
    said = [line for line in capsys.readouterr().out.splitlines() if " FAILED: " in line]
    assert sorted(line.split()[1] for line in said) == sorted(f"{int(c.data.tags['tuner.trial_id']) + 1}/6" for c in failed)
    assert all(re.fullmatch(r"trial \d/6 units=\d+ embedding_dim=\d+ dropout=1\.5 FAILED: ConfigError: model\.dropout must be in \[0, 1\), got 1\.5 \d+ s.*", line)
               for line in said), said


def test_workers_on_this_host_share_its_cores_unless_the_command_sets_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import compose_train
    from pipeline.tuning import distributed

    monkeypatch.setattr(distributed, "cores", lambda: 8)
    given = ["tuner.workers=2", "seed=3", "hydra.run.dir=x", "tuner.overwrite=true"]
    cfg = compose_train(["tuner.workers=2"], config_name="tune")
    assert distributed.worker_overrides(cfg, given) == ["seed=3", "tuner.workers=0", "tuner.overwrite=false", "training.threads=4"]
    for workers, threads in ((3, 2), (8, 1), (16, 1)):
        cfg = compose_train([f"tuner.workers={workers}"], config_name="tune")
        assert distributed.worker_overrides(cfg, [])[-1] == f"training.threads={threads}"
    cfg = compose_train(["tuner.workers=2", "training.threads=8"], config_name="tune")
    assert distributed.worker_overrides(cfg, ["training.threads=8"]) == ["training.threads=8", "tuner.workers=0", "tuner.overwrite=false"]


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_chief_and_two_workers_share_one_parent(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(["tune", *SMALL, "tuner.max_trials=6", "tuner.workers=2"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children = _runs(store_uri)
    assert len(parents) == 1
    assert sorted(c.data.tags["tuner.trial_id"] for c in children) == [str(i) for i in range(6)]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.tags["tuner.tuner_id"] for c in children} == {"worker0", "worker1"}
    # each worker at its share of the cores: two workers on two cores do not run two threads a core
    assert {c.data.tags["training.threads"] for c in children} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    assert all(c.info.status == "FINISHED" for c in children)
    assert _versions(client, "lstm-bbc_news") == ["1"]
    # each trial's end said once, by its worker (the chief's oracle prints no table of its own)
    said = sorted(line.split()[2] for line in result.stdout.splitlines() if re.match(r"worker[01]: trial \d/6 .* val_accuracy=", line))
    assert said == [f"{i}/6" for i in range(1, 7)] and "Search: Running Trial" not in result.stdout, result.stdout[-3000:]


def test_a_finished_search_run_again_as_chief_or_with_workers_runs_nothing_and_a_late_worker_ends(make_cfg, store_uri: str, capsys) -> None:
    """How the trials were spread over processes does not change the final model: run again with
    workers, or as a chief (which waited for workers that never came, then left its parent KILLED),
    the search says it finished before and serves nothing; a worker started after the end (a
    SLURM array's late task) says so and ends at once (it waited 120 s and failed)."""
    search = [*SHRINK, "dataset.max_samples=200", *SPACE, "tuner.max_trials=1"]
    client = MlflowClient(store_uri)
    tune.run(make_cfg(*search, config_name="tune"))
    first = capsys.readouterr().out.splitlines()[-1].split(" | ")[0]
    for spread in (["tuner.workers=2"], ["tuner.rank=0"]):
        tune.run(make_cfg(*search, *spread, config_name="tune"))
        out, err = capsys.readouterr()
        assert "finished before" in err and out.splitlines()[-1].split(" | ")[0] == first.replace("is now @champion", "is @candidate and @champion"), out
        assert "chief: oracle at" not in out and "worker" not in out, out
    (parent,) = _runs(store_uri)[1]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED" and _versions(client, "lstm-bbc_news") == ["1"]
    assert len(client.search_logged_models(experiment_ids=[parent.info.experiment_id])) == 1
    assert math.isnan(tune.run(make_cfg(*search, "tuner.rank=1", config_name="tune")))
    assert "has ended; no trial left to run" in capsys.readouterr().out
    # another final step, as a chief: its trials are all run, so a new final model without waiting for workers
    tune.run(make_cfg(*search, "tuner.rank=0", "tuner.final.refit=false", config_name="tune"))
    out, err = capsys.readouterr()
    assert "finished before" not in err and "chief: oracle at" not in out and "final model the best trial's model" in out, out


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is still a pipeline command (not ended, nor a zombie, nor another process since)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return "State:\tZ" not in status and "pipeline" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_workers_end_with_their_chief_killed_with_sigkill(tmp_path: Path, store_uri: str) -> None:
    """kill -9 of the chief runs none of its clean-up: its workers, blocked on an oracle that is
    gone (Keras Tuner's client waits for it as long as it takes), lived on, re-parented, for good."""
    chief = subprocess.Popen(["pipeline", "tune", *SHRINK, "dataset.max_samples=600", *SPACE, "tuner.max_trials=4", "training.epochs=30",
                              "training.early_stopping.enabled=false", "tuner.prune.rule=none", "tuner.workers=2"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in chief.stdout:
            if re.match(r"worker\d: trial \d/4 .*\.\.\.$", line):  # a trial under way
                break
        workers = [int(pid) for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(chief.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        assert len(workers) == 2
        chief.kill()
        chief.wait()
        wait_for(lambda: not any(_alive(pid) for pid in workers), 60, "the workers to end with their chief")
    finally:
        if chief.poll() is None:
            chief.kill()
        chief.stdout.close()
    # their trial runs: stopped as Ctrl-C stops them, none left RUNNING
    assert {r.info.status for r in _runs(store_uri)[2]} <= {"KILLED", "FINISHED"}


def test_training_threads_applies_to_a_search(tmp_path: Path) -> None:
    """The search's pass over its settings builds a model at each end of its space before the job:
    TensorFlow's pools were fixed by then, so training.threads was never applied to a search (nor
    to the workers that tuner.workers starts at their share of the cores), while each trial was
    tagged with it."""
    program = ("import sys; from pipeline import cli; code = cli.main(sys.argv[1:]); import tensorflow as tf; "
               "print('exit', code, 'threads', tf.config.threading.get_intra_op_parallelism_threads(), "
               "tf.config.threading.get_inter_op_parallelism_threads())")
    result = subprocess.run([sys.executable, "-c", program, "tune", *SMALL, "tuner.max_trials=1", "tracking.log_model=false",
                             "training.threads=1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "exit 0 threads 1 1" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "not applied" not in result.stdout + result.stderr


@pytest.mark.stress  # with -m stress, to keep the default suite within 15 minutes (a multirun: tests/test_train_e2e.py)
def test_multirun_gives_each_job_its_own_search(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(["tune", "-m", *SMALL, "tuner.max_trials=1", "tracking.log_model=false", "seed=1,2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children = _runs(store_uri)
    assert sorted(p.data.tags["tuner.project"] for p in parents) == ["bbc_news-lstm-seed1", "bbc_news-lstm-seed2"]
    assert all(Path(p.data.tags["tuner.directory"]).is_absolute() for p in parents)
    assert len({p.data.tags["tuner.directory"] for p in parents}) == 2
    assert len(children) == 2


BAD = [
    ("empty space", ["~search_space.model"], "search space is empty"),
    ("min above max", ["search_space.model.units={type:int,min:64,max:8}"], "search_space.model.units: min 64 is above max 8"),
    ("unknown tuner", ["tuner=grid"], "tuner/grid"),
    ("zero trials", ["tuner.max_trials=0"], "tuner.max_trials must be at least 1"),
    ("objective not logged", ["tuner.objective=val_f1"], "Invalid value 'val_f1', expected one of [loss, accuracy, val_loss, val_accuracy]"),
    ("a field of another tuner", ["tuner=hyperband", "tuner.max_trials=3"], "Key 'max_trials' not in 'HyperbandConfig'"),
    ("unknown name", ["+search_space.width={type:int,min:1,max:2}"], "search_space.width: not a searchable setting"),
    ("misspelled key", ["search_space.model.units={type:int,mni:8,max:32}"], "'mni'"),
    ("bare name", ["+search_space.units={type:int,min:8,max:16}"], "search_space.units: not a searchable setting; did you mean model.units?"),
    ("not a trial's setting", ["+search_space.dataset.vocab_size={type:int,min:100,max:200}"], "search_space.dataset.vocab_size: not a searchable"),
    ("value of the wrong type", ["search_space.model.units={min:2.5}"], "search_space.model.units: 2.5 is not a valid model.units"),
    ("one seed for seed variance", ["tuner.final.seed_variance.top_k=2", "tuner.final.seed_variance.seeds=[1]"], "at least two different seeds"),
    ("pruning hyperband", ["tuner=hyperband", "tuner.prune.rule=median"], "as Hyperband's rounds do already"),
    # found by a helper's hunt: Keras's CosineDecay holds 0 past its horizon, so those rounds' epochs trained nothing
    ("hyperband past the cosine horizon", ["tuner=hyperband", "tuner.max_epochs=3"],
     "tuner.max_epochs=3 trains past training.epochs=1, where the cosine schedule has brought the learning rate to 0"),
    ("no finished trial to compare with", ["tuner.prune.rule=median", "tuner.prune.min_trials=0"], "tuner.prune.min_trials must be at least 1"),
    ("unknown pruning rule", ["tuner.prune.rule=mean"], "Invalid value 'mean', expected one of [none, median]"),
]


@pytest.mark.no_store  # asserts what the command leaves in an empty directory
@pytest.mark.parametrize("name, args, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_search_settings_fail_in_one_line(tmp_path: Path, name: str, args: List[str], fragment: str) -> None:
    result = run_cli(["tune", *SMALL, *args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlruns").exists(), "a bad search setting opened the store"


@pytest.mark.no_store  # asserts what the command leaves in an empty directory
@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_chief_and_workers_as_separate_jobs_against_a_tracking_server(tmp_path: Path, mlflow_server: str) -> None:
    # what a SLURM array does (hydra/launcher=slurm), here with submitit's local executor:
    # rank 0 serves the oracle, ranks 1 and 2 find it in the shared tuner directory
    result = run_cli(
        ["tune", "-m", "hydra/launcher=submitit_local", "tuner.rank=0,1,2", *SMALL, "tuner.max_trials=4",
         f"tracking.uri={mlflow_server}"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children = _runs(mlflow_server)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["tuner.trial_id"] for c in children) == ["0", "1", "2", "3"]
    assert {c.data.tags["tuner.tuner_id"] for c in children} <= {"worker1", "worker2"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert _versions(client, "lstm-bbc_news") == ["1"]
    assert not (tmp_path / "mlruns").exists(), "everything went to the server"


def test_the_slurm_launcher_config_composes(tmp_path: Path) -> None:
    result = run_cli(["tune", "hydra/launcher=slurm", "--cfg", "hydra"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "timeout_min: 720" in result.stdout


def test_a_search_killed_while_recording_its_inputs_resumes_into_the_same_parent(make_cfg, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between opening the parent run and recording the config: the same command continues
    that parent (and records the config it lacked) instead of leaving it behind for a second one."""
    from pipeline import experiment

    cfg = make_cfg(*SMALL, "tuner.max_trials=1", "tracking.log_model=false", config_name="tune")
    _killed_in_then_resumed(cfg, experiment, "record_inputs", monkeypatch)
    _, parents, children = _runs(store_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["tuner.name"] == "random" and len(children) == 1


FOLDS = [*SHRINK, "dataset.max_samples=200", "search_space=tiny", "tuner.cv_folds=3", "baseline.enabled=false",
         "tuner.final.ensemble.seeds=[]"]


def test_cross_validated_trials_are_ranked_by_their_mean_over_folds(make_cfg, store_uri: str, capsys) -> None:
    import numpy as np

    from pipeline.tuning import folds

    cfg = make_cfg(*FOLDS, "tuner.max_trials=2", "training.epochs=3", "tracking.log_model=false", config_name="tune")
    tune.run(cfg)
    out = capsys.readouterr().out
    client, (parent,), children = _runs(store_uri)
    trial_runs = [c for c in children if "tuner.trial_id" in c.data.tags]
    assert len(trial_runs) == 2
    for run in trial_runs:
        # every fold's curves on the trial's run, step = epoch
        curves = []
        for k in range(3):
            steps = sorted(client.get_metric_history(run.info.run_id, f"fold{k}.val_accuracy"), key=lambda m: m.step)
            assert [m.step for m in steps] == list(range(len(steps))) and steps
            curves.append([m.value for m in steps])
        assert "fold3.val_accuracy" not in run.data.metrics
        # the trial's score is the best epoch of the mean curve (a fold stopped early keeps its last value)
        mean = folds.mean_curve([{"val_accuracy": c, "loss": c} for c in curves])["val_accuracy"]
        assert run.data.metrics["trial_score"] == pytest.approx(max(mean))
        best = int(np.argmax(mean))
        spread = np.std([c[min(best, len(c) - 1)] for c in curves], ddof=1)
        assert run.data.metrics["trial_score_std"] == pytest.approx(spread) and run.data.metrics["cv_folds"] == 3
        assert curve(client, run.info.run_id, "val_accuracy") == pytest.approx(mean)
        # and its line says so: the mean, over how many folds, the spread beside it
        number = int(run.data.tags["tuner.trial_id"]) + 1
        assert f"trial {number}/2 " in out and f" val_accuracy={max(mean):.4f} (mean of 3 folds, sd {spread:.4f}) (best " in out, out
    # what the oracle ranked by is the mean: the best trial is the one with the best mean
    top = max(trial_runs, key=lambda r: r.data.metrics["trial_score"])
    assert parent.data.metrics["best_score"] == pytest.approx(top.data.metrics["trial_score"])
    # no single trial model exists: the final model is the refit, for the mean curve's best epoch count
    assert "best_trial.test_accuracy" not in parent.data.metrics
    mean_top = curve(client, top.info.run_id, "val_accuracy")
    if parent.data.tags["best_trial_id"] == top.data.tags["tuner.trial_id"]:
        assert parent.data.metrics["refit.epochs"] == mean_top.index(max(mean_top)) + 1
    assert "test_accuracy_ci_low" in parent.data.metrics


def test_a_fold_scored_project_is_not_reloaded_as_a_search_without_folds(make_cfg, store_uri: str) -> None:
    """The same project without folds (tuner.cv_folds=1, or auto with tuner.final.refit=false) is
    another search: its trials have no models of their own (it failed on a missing checkpoint, after
    rewriting the project's identity so that the first command was refused)."""
    tune.run(make_cfg(*FOLDS, "tuner.max_trials=1", "tracking.log_model=false", config_name="tune"))
    with pytest.raises(ConfigError, match=r"holds another search \(its folds differs\)"):
        tune.run(make_cfg(*FOLDS, "tuner.max_trials=1", "tuner.cv_folds=1", "tracking.log_model=false", config_name="tune"))
    _, parents, _ = _runs(store_uri)
    assert [p.info.status for p in parents] == ["FINISHED"]
    tune.run(make_cfg(*FOLDS, "tuner.max_trials=1", "tracking.log_model=false", config_name="tune"))  # the first command still runs


def test_hyperband_ranks_fold_scored_trials_by_their_mean(make_cfg, store_uri: str, capsys: pytest.CaptureFixture) -> None:
    cfg = make_cfg(*FOLDS, "tuner.cv_folds=2", "tuner=hyperband", "tuner.max_epochs=2", "training.epochs=2", "tuner.factor=2", "tracking.log_model=false",
                   config_name="tune")
    tune.run(cfg)
    client, (parent,), children = _runs(store_uri)
    assert parent.data.tags["tuner.name"] == "hyperband" and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["tuner.trial_id"] for c in children}) == len(children)
    assert len(children) >= 2 and all(c.data.metrics["cv_folds"] == 2 for c in children)
    assert all(c.data.tags["tuner.cv_folds"] == "2" for c in children)  # also known to a run cut off before its end (pipeline rerun)
    # its number of trials is not known ahead: each line has the trial's epochs and the time so far
    ends = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ") and "val_accuracy=" in line]
    assert len(ends) == len(children)
    assert all(re.fullmatch(r"trial \d+ units=\d+ embedding_dim=\d+ epochs=[12]( \(continues trial \d+\))? val_accuracy=.* so far", e) for e in ends), ends
    for run in children:  # each round trains its budget of epochs on both folds
        budget = int(run.data.params["hp.tuner/epochs"])
        assert len(client.get_metric_history(run.info.run_id, "fold1.loss")) <= budget
    assert parent.data.metrics["best_score"] == pytest.approx(max(c.data.metrics["trial_score"] for c in children))


@pytest.mark.stress  # 80-130 s: with -m stress, to keep the default suite within 15 minutes
def test_a_search_killed_mid_trial_keeps_the_folds_it_had_finished(tmp_path: Path, store_uri: str) -> None:
    args = ["tune", *FOLDS, "tuner.max_trials=1", "training.epochs=6", "training.early_stopping.enabled=false", "tracking.log_model=false"]
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    MlflowClient(store_uri).search_experiments()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "tuner" / "bbc_news-lstm-seed42" / "folds" / "trial0"
    try:
        wait_for(lambda: (folder / "fold0.json").is_file(), 300, "the first fold to finish")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = {p.name: p.stat().st_mtime_ns for p in folder.glob("fold*.json")}
    assert "fold0.json" in done and len(done) < 3, done
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming search" in result.stdout
    # the finished folds were read back, not trained again; the others were trained
    assert {p.name for p in folder.glob("fold*.json")} == {"fold0.json", "fold1.json", "fold2.json"}
    assert all(folder.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in done.items())
    client, (parent,), children = _runs(store_uri)
    finished = [c for c in children if c.data.tags.get("tuner.trial_id") == "0" and c.info.status == "FINISHED"]
    assert len(finished) == 1 and all(f"fold{k}.val_accuracy" in finished[0].data.metrics for k in range(3))
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["tuner.cv_folds=0"], "tuner.cv_folds must be auto, 1 (no folds) or at least 2, got 0"),
        (["tuner.cv_folds=500"], "more folds than class"),
        (["tuner.cv_folds=3", "tuner.final.refit=false"], "needs tuner.final.refit=true"),
    ],
)
def test_bad_fold_settings_fail_in_one_line_before_any_run(tmp_path: Path, store_uri: str, overrides: List[str], fragment: str) -> None:
    result = run_cli(["tune", *SHRINK, "dataset.max_samples=200", "search_space=tiny", *overrides], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert fragment in line
    assert not (tmp_path / "tuner").exists() and not runs_in(store_uri)


@pytest.mark.parametrize("value", ["-3", "three", "2.5", "''"])
def test_fold_counts_that_are_not_counts_are_refused_before_any_data_is_read(make_cfg, value: str) -> None:
    from pipeline.tuning.tuners import validate

    with pytest.raises(ConfigError, match=r"tuner.cv_folds must be auto, 1 \(no folds\) or at least 2"):
        validate(make_cfg(*SMALL, f"tuner.cv_folds={value}", config_name="tune"))


def test_folds_are_on_below_the_auto_size_and_off_above_it(make_cfg) -> None:
    from pipeline import experiment
    from pipeline.tuning import folds

    cfg = make_cfg("dataset.max_samples=200", config_name="tune")
    prepared = experiment.prepare(cfg)
    assert folds.resolve(cfg, prepared) == cfg.tuner.cv_auto.folds == 5  # 180 labelled texts < 1000
    assert folds.resolve(make_cfg("dataset.max_samples=200", "tuner.cv_auto.below=100", config_name="tune"), prepared) == 1
    assert folds.resolve(make_cfg("dataset.max_samples=200", "tuner.final.refit=false", config_name="tune"), prepared) == 1
    # stratified: every fold's validation rows keep the class shares of train+validation
    labels = np.concatenate([prepared.encoded["train"][1], prepared.encoded["val"][1]])
    for train_rows, val_rows in folds.splits(prepared, 5, 42):
        assert not set(train_rows) & set(val_rows) and len(train_rows) + len(val_rows) == len(labels)
        assert abs(np.bincount(labels[val_rows], minlength=5) / len(val_rows) - np.bincount(labels, minlength=5) / len(labels)).max() < 0.06


def test_a_fixed_split_seed_fixes_the_folds_and_the_run_seed_varies_them_otherwise(make_cfg) -> None:
    """`-m seed=1,2,3 dataset.split_seed=42` varies only the training (README): on folds too."""
    from pipeline import experiment
    from pipeline.tuning import folds

    def fold_rows(*overrides: str) -> list:
        cfg = make_cfg("dataset.max_samples=200", *overrides, config_name="tune")
        return [sorted(val_rows) for _, val_rows in folds.search_splits(cfg, experiment.prepare(cfg), 5)]

    assert fold_rows("seed=1", "dataset.split_seed=42") == fold_rows("seed=2", "dataset.split_seed=42")
    # no split seed: the run's seed divides both (seed=7 alone is split seed 7)
    assert fold_rows("seed=7") == fold_rows("seed=3", "dataset.split_seed=7")
    # and the folds do depend on the seed they are drawn with
    cfg = make_cfg("dataset.max_samples=200", config_name="tune")
    prepared = experiment.prepare(cfg)
    assert [sorted(v) for _, v in folds.splits(prepared, 5, 1)] != [sorted(v) for _, v in folds.splits(prepared, 5, 2)]


def test_a_finished_fold_is_read_back_only_for_the_rows_it_validated_on(make_cfg, tmp_path: Path) -> None:
    """A resumed search keeps its finished folds; a fold file of other rows (folds drawn with another
    seed, as before they followed dataset.split_seed) is trained again, not mixed into the mean."""
    from pipeline import experiment
    from pipeline.tuning import folds

    cfg = make_cfg("dataset.max_samples=200", config_name="tune")
    prepared = experiment.prepare(cfg)
    (_, rows), (_, other_rows) = folds.splits(prepared, 5, 42)[:2]
    history = {"loss": [0.5, 0.4], "val_accuracy": [0.7, 0.8]}
    path = tmp_path / "trial0" / "fold0.json"
    assert folds.finished_fold(path, rows) is None
    folds._write_whole(path, {"fold": 0, "folds": 5, "val_rows": folds.rows_digest(rows), "history": history})
    assert folds.finished_fold(path, rows) == history
    assert folds.finished_fold(path, other_rows) is None
    assert folds.finished_fold(path, folds.splits(prepared, 5, 7)[0][1]) is None
    # a file that does not say which rows it validated on is not trusted either
    folds._write_whole(path, {"fold": 0, "folds": 5, "history": history})
    assert folds.finished_fold(path, rows) is None


# --- which trial is best -------------------------------------------------------------------------


def _oracle_with(tmp_path: Path, cls, direction: str, results) -> tuple:
    """A pipeline oracle with one trial per (units, score, status), run in that order; their ids."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Int("model.units", 8, 256, step=8)
    kwargs = {"max_epochs": 4} if cls.__name__ == "HyperbandOracle" else {"max_trials": 10}
    oracle = cls(objective=keras_tuner.Objective("val_loss" if direction == "min" else "val_accuracy", direction),
                 hyperparameters=hp, seed=1, **kwargs)
    oracle._set_project_dir(str(tmp_path), "p")
    ids = []
    for units, score, status in results:
        trial = oracle.create_trial("tuner0")
        trial.hyperparameters.values["model.units"] = units
        if status == "COMPLETED":
            oracle.update_trial(trial.trial_id, {oracle.objective.name: score})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
        ids.append(trial.trial_id)
    return oracle, ids


@pytest.mark.parametrize("name", ["RandomSearchOracle", "BayesianOptimizationOracle", "HyperbandOracle"])
def test_equal_scores_rank_the_model_with_fewer_weights_first(tmp_path: Path, name: str) -> None:
    """213 validation articles score in steps of 0.47 points: two trials often tie exactly, and
    Keras Tuner would then call the first to run best. The search calls the smaller model best."""
    from pipeline.tuning import compat

    results = [(200, 0.75, "COMPLETED"), (64, 0.75, "COMPLETED"), (32, 0.70, "COMPLETED"), (16, 0.75, "COMPLETED"),
               (128, 0.80, "COMPLETED"), (8, None, "RUNNING")]
    oracle, ids = _oracle_with(tmp_path, getattr(compat, name), "max", results)
    ran_first = [t.trial_id for t in oracle.get_best_trials(6)]
    assert ran_first == [ids[4], ids[0], ids[1], ids[3], ids[2], ids[5]]  # without a weight count: run order

    asked = []
    oracle.weights_of = lambda values: asked.append(values["model.units"]) or values["model.units"] * 10
    assert [t.trial_id for t in oracle.get_best_trials(1)] == [ids[4]], "a better score still wins"
    assert asked == [], "no tie reaches the top: no model built"
    # the unfinished trial stays last
    assert [t.trial_id for t in oracle.get_best_trials(6)] == [ids[4], ids[3], ids[1], ids[0], ids[2], ids[5]]
    assert asked == [200, 64, 16], "each tied model counted once per ranking"

    # the search's ranking (search/trials.csv) agrees: rank 1 is the best trial
    from types import SimpleNamespace

    from pipeline.tuning.trials import trial_table

    table = trial_table(SimpleNamespace(oracle=oracle, project_dir=str(tmp_path / "p")))
    assert table["trial_id"].tolist() == [ids[4], ids[3], ids[1], ids[0], ids[2], ids[5]]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    oracle.weights_of = lambda values: 1  # equal weights too: the order they ran
    assert [t.trial_id for t in oracle.get_best_trials(6)] == ran_first


def test_equal_losses_rank_the_model_with_fewer_weights_first(tmp_path: Path) -> None:
    from pipeline.tuning import compat

    oracle, ids = _oracle_with(tmp_path, compat.RandomSearchOracle, "min",
                               [(200, 0.5, "COMPLETED"), (64, 0.4, "COMPLETED"), (16, 0.5, "COMPLETED")])
    oracle.weights_of = lambda values: values["model.units"]
    assert [t.trial_id for t in oracle.get_best_trials(3)] == [ids[1], ids[2], ids[0]]


def test_a_search_breaks_ties_on_its_models_weight_count(make_cfg, tmp_path: Path) -> None:
    from pipeline import experiment
    from pipeline.model import build_model
    from pipeline.search_space import with_values
    from pipeline.tuning import tuners
    from pipeline.tuning.project import Project

    csv = write_sentiment_csv(tmp_path / "d.csv", n=60)
    cfg = make_cfg("dataset=files", f"dataset.path={csv}", *SPACE, config_name="tune")
    prepared = experiment.prepare(cfg)
    oracle = tuners.make_tuner(cfg, prepared, Project(tmp_path / "tuner", "p", {}), None, tuners.validate(cfg)).oracle
    small, large = {"model.units": 8, "model.embedding_dim": 8}, {"model.units": 24, "model.embedding_dim": 16}
    counts = [build_model(with_values(cfg, v), prepared.shape).count_params() for v in (small, large)]
    assert [oracle.weights_of(v) for v in (small, large)] == counts and counts[0] < counts[1]
    first_cfg = make_cfg("dataset=files", f"dataset.path={csv}", *SPACE, "tuner.ties=first", config_name="tune")
    first = tuners.make_tuner(first_cfg, prepared, Project(tmp_path / "tuner2", "p", {}), None, tuners.validate(first_cfg)).oracle
    assert first.weights_of is None, "tuner.ties=first: Keras Tuner's order"


def test_a_search_resumed_after_its_trials_writes_each_summary_of_its_parent_once(make_cfg, store_uri: str,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed in its final step and run again: the parent's baseline metrics and trial summary, which
    the resumed process logs again as it goes over its steps, are one point each on its charts."""
    from pipeline.tuning import final

    cfg = make_cfg(*SHRINK, "dataset.max_samples=200", *SPACE, "tuner.max_trials=1", "tuner.final.ensemble.seeds=[]",
                   "tracking.log_model=false", config_name="tune")
    _killed_in_then_resumed(cfg, final, "refit", monkeypatch)
    client, (parent,), _ = _runs(store_uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["resumed"] == "1"
    for key in ("baseline.test_accuracy", "baseline.val_accuracy", "best_score", "trials_completed", "trials_total", "test_accuracy"):
        assert len(client.get_metric_history(parent.info.run_id, key)) == 1, key


def test_the_same_finished_search_again_reports_its_final_model_and_records_nothing_twice(make_cfg, store_uri: str, capsys) -> None:
    """A finished search run again (the command from the shell history) reports what it ended with:
    no second final model trained, logged or registered, and no metric of its parent written twice
    (each write is one more point on the parent's charts). Another final-model setting makes it again
    (and registers it: test_each_final_model_of_a_search_is_registered_and_the_same_command_moves_no_alias)."""
    search = [*SHRINK, "dataset.max_samples=200", *SPACE, "tuner.max_trials=1", "tuner.final.ensemble.seeds=[]"]
    tune.run(make_cfg(*search, config_name="tune"))
    first = capsys.readouterr().out.splitlines()[-1]
    tune.run(make_cfg(*search, config_name="tune"))
    out, err = capsys.readouterr()
    assert "note: this search finished before with these settings" in err
    again = out.splitlines()[-1]
    assert again.split("test_accuracy=")[1].split(" |")[0] == first.split("test_accuracy=")[1].split(" |")[0]  # the same model, the same line
    client = MlflowClient(store_uri)
    _, (parent,), _ = _runs(store_uri)
    assert parent.info.status == "FINISHED"
    for key in ("baseline.test_accuracy", "best_score", "trials_completed", "test_accuracy", "refit.epochs"):
        assert len(client.get_metric_history(parent.info.run_id, key)) == 1, key
    models = client.search_logged_models(experiment_ids=[parent.info.experiment_id], filter_string=f"source_run_id = '{parent.info.run_id}'")
    assert len(models) == 1
    assert _versions(client, "lstm-bbc_news") == ["1"]

    tune.run(make_cfg(*search, "tuner.final.refit=false", config_name="tune"))  # another final model: made and logged
    out, err = capsys.readouterr()
    assert "finished before" not in err and "final model the best trial's model" in out.splitlines()[-1]
    assert len(client.search_logged_models(experiment_ids=[parent.info.experiment_id], filter_string=f"source_run_id = '{parent.info.run_id}'")) == 2

    client.delete_run(parent.info.run_id)  # its parent run deleted in the UI: the same command again gives the new one a final model
    tune.run(make_cfg(*search, "tuner.final.refit=false", config_name="tune"))
    assert "finished before" not in capsys.readouterr().err
    (new,) = [r for r in _runs(store_uri)[1] if r.info.run_id != parent.info.run_id]
    assert "test_accuracy" in new.data.metrics


def test_each_final_model_of_a_search_is_registered_and_the_same_command_moves_no_alias(make_cfg, store_uri: str, capsys,
                                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered version is the final model the last line reports: another final-model setting
    makes a new model and a new version (the line names it); the same command again moves no alias
    (a later search's version may hold @candidate by now), and a setting that does not change the
    model (tuner.promote, the registered name) makes no model again; a version deleted since is
    registered again from the model the search logged, and made again when that model is gone too;
    a deleted parent's replacement registers its own final model."""
    search = [*SHRINK, "dataset.max_samples=200", *SPACE, "tuner.max_trials=1", "tuner.final.ensemble.seeds=[]"]
    client = MlflowClient(store_uri)

    def last_line(*more: str) -> str:
        tune.run(make_cfg(*search, *more, config_name="tune"))
        return capsys.readouterr().out.splitlines()[-1]

    assert "registered lstm-bbc_news v1 is now @champion" in last_line()
    (parent,) = _runs(store_uri)[1]
    models = lambda: client.search_logged_models(experiment_ids=[parent.info.experiment_id])  # noqa: E731
    line = last_line("tuner.final.refit=false")  # another final model
    assert "final model the best trial's model" in line and "registered lstm-bbc_news v2 is" in line, line
    assert _versions(client, "lstm-bbc_news") == ["1", "2"] and len(models()) == 2
    second = client.get_model_version("lstm-bbc_news", "2")
    assert second.run_id == parent.info.run_id and float(second.tags["test_accuracy"]) == pytest.approx(
        float(line.split("test_accuracy=")[1].split()[0]), abs=1e-4)
    assert second.tags["final_key"] != client.get_model_version("lstm-bbc_news", "1").tags["final_key"]

    client.set_registered_model_alias("lstm-bbc_news", "candidate", "1")  # as another search's version would take it
    line = last_line("tuner.final.refit=false")  # the same command again
    assert "registered lstm-bbc_news v2" in line and "@candidate" not in line, line
    assert str(client.get_model_version_by_alias("lstm-bbc_news", "candidate").version) == "1"
    # a state recorded before its model was kept: the version read with its aliases
    import json

    from pipeline.tuning.project import STATE_FILE

    (state_file,) = Path(make_cfg(*search, config_name="tune").tuner.directory).rglob(STATE_FILE)
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": {k: v for k, v in state["finished"].items() if k not in ("model", "promote")}}))
    client.set_registered_model_alias("lstm-bbc_news", "champion", "2")
    assert "registered lstm-bbc_news v2 is @champion" in last_line("tuner.final.refit=false")
    state_file.write_text(json.dumps(state))

    client.set_registered_model_alias("lstm-bbc_news", "champion", "1")
    line = last_line("tuner.final.refit=false", "tuner.promote=always")  # not another model: the rule asked for
    assert "v2 is now @champion (tuner.promote=always)" in line and len(models()) == 2, line
    assert str(client.get_model_version_by_alias("lstm-bbc_news", "candidate").version) == "1", "another rule moves @champion only"
    assert "registered lstm-bbc_news v2 is @champion" in last_line("tuner.final.refit=false")  # the rule back as it was
    # another name: the logged model registered as it (a process killed between registering and
    # promoting it: the same command promotes it)
    _killed_in_then_resumed(make_cfg(*search, "tuner.final.refit=false", "tuner.final.registered_model_name=other", config_name="tune"),
                            tune, "_promote", monkeypatch)
    line = capsys.readouterr().out.splitlines()[-1]
    assert "registered other v1 is now @champion" in line and len(models()) == 2, line
    assert client.get_model_version("other", "1").source == second.source
    line = last_line("tuner.final.refit=false")  # back to its first name: the version it has there
    assert "registered lstm-bbc_news v2 is" in line and _versions(client, "lstm-bbc_news") == ["1", "2"], line

    client.delete_model_version("lstm-bbc_news", "2")
    line = last_line("tuner.final.refit=false")
    assert "registered lstm-bbc_news v3 is" in line and "candidate" in client.get_model_version("lstm-bbc_news", "3").aliases, line
    assert len(models()) == 2, "registered from the model logged, not made again"
    third = client.get_model_version("lstm-bbc_news", "3")
    assert third.source == second.source and third.tags["best_trial_id"] == second.tags["best_trial_id"]
    assert third.tags["test_accuracy"] == second.tags["test_accuracy"]

    client.delete_model_version("lstm-bbc_news", "3")  # and the model it was made from
    client.delete_logged_model(third.source.removeprefix("models:/"))
    line = last_line("tuner.final.refit=false")
    assert "registered lstm-bbc_news v4 is" in line and client.get_model_version("lstm-bbc_news", "4").source != third.source, line

    client.delete_run(parent.info.run_id)
    line = last_line("tuner.final.refit=false")
    assert "registered lstm-bbc_news v5" in line, line
    assert client.get_model_version("lstm-bbc_news", "5").run_id != parent.info.run_id


def test_a_resumed_search_keeps_the_tie_rule_it_started_with(make_cfg, store_uri: str, capsys) -> None:
    """Resuming never makes another of two tied trials the best (and refits and registers it): a
    search started before tuner.ties existed keeps Keras Tuner's order."""
    import json

    from pipeline.tuning.project import STATE_FILE

    search = [*SMALL, "tuner.max_trials=1", "tracking.log_model=false"]
    cfg = make_cfg(*search, config_name="tune")
    tune.run(cfg)
    (state_file,) = Path(cfg.tuner.directory).rglob(STATE_FILE)
    assert json.loads(state_file.read_text())["ties"] == "fewer_weights"
    capsys.readouterr()

    state = json.loads(state_file.read_text())
    del state["ties"]  # as a project from before the setting
    state_file.write_text(json.dumps(state))
    tune.run(cfg)
    out, err = capsys.readouterr()
    assert "note: this search ranks equal scores by tuner.ties=first, as it started" in err  # a diagnostic: stderr
    assert json.loads(state_file.read_text())["ties"] == "first"
    # and so again, recorded; another thread count is the same search (like the log level, not part of its identity)
    tune.run(make_cfg(*search, "training.threads=1", config_name="tune"))
    out, err = capsys.readouterr()
    assert "tuner.ties=first, as it started" in err and "resuming search" in out
    assert "Reloading Tuner from" not in out  # Keras Tuner's own line: the pipeline's says it (pipeline/tuning/compat.py)
    assert len(_runs(store_uri)[1]) == 1
