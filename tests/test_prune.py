"""``tuner.prune``: the median stopping rule, in a real search and as a function of curves."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from conftest import SHRINK, curve
from pipeline import tune
from pipeline.tuning import prune

#: One learning rate that learns and three that cannot move the weights (each trial starts from the
#: same weights, the search's seed): a search over them has trials that are behind from their first epoch.
LEARNING_RATES = ["~search_space.model", "+search_space.training.learning_rate={type:choice,values:[0.01,1e-12,1e-13,1e-14]}"]
PRUNED_SEARCH = [*SHRINK, "dataset.max_samples=200", "baseline.enabled=false", "tuner.cv_folds=1", "tuner.final.ensemble.seeds=[]",
                 *LEARNING_RATES, "tuner.max_trials=4", "training.epochs=4", "training.early_stopping.enabled=false",
                 # val_loss: every epoch of learning shows in it (accuracy on 40 texts can stay level)
                 "tuner.objective=val_loss", "tuner.direction=min", "tracking.log_model=false",
                 "tuner.prune.rule=median", "tuner.prune.min_trials=1", "tuner.prune.min_epochs=2"]


# (one run: with -m stress, to keep the default suite within 15 minutes; the resumed search runs every check of it too)
@pytest.mark.parametrize("resumed", [pytest.param(False, marks=pytest.mark.stress), True], ids=["one run", "resumed after two trials"])
def test_a_trial_behind_the_finished_ones_stops_after_min_epochs_and_says_so(make_cfg, store_uri: str, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture, resumed: bool) -> None:
    cfg = make_cfg(*PRUNED_SEARCH, config_name="tune")
    if resumed:  # the same search stopped after two trials, then continued: it compares with the first run's trials
        tune.run(make_cfg(*PRUNED_SEARCH, "tuner.max_trials=2", config_name="tune"))
    tune.run(cfg)
    client = MlflowClient(store_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trials = sorted((r for r in runs if "tuner.trial_id" in r.data.tags), key=lambda r: r.data.tags["tuner.trial_id"])
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    lines = {m.group(1): line for line in capsys.readouterr().out.splitlines()
             if (m := re.match(r"trial (\d)/[24] learning_rate=\S+ val_loss=", line))}

    # the rule, replayed on the curves the runs recorded, in the order the trials ran
    finished, stopped = [], []
    for run in trials:
        losses = curve(client, run.info.run_id, "val_loss")
        tag = run.data.tags.get("tuner.pruned")
        line = lines[str(int(run.data.tags["tuner.trial_id"]) + 1)]
        expected = next((s for e in range(1, 4) if (s := prune.decide(losses[:e], finished, "min", 1, 2))), None)
        if expected is None:
            assert tag is None and "stopped after" not in line, (losses, finished)
            assert len(losses) == 4  # trained every epoch (early stopping is off)
            finished.append(losses)
        else:
            # stopped after the epoch the rule names, with the reason on its run and its line
            assert len(losses) == expected.epoch == 2, (losses, finished)
            assert tag == expected.describe("val_loss") and f", {tag}," in line
            assert run.data.metrics["trial_score"] == pytest.approx(min(losses))
            stopped.append(run.data.params["hp.training.learning_rate"])
    # the learning trial is never stopped, and the trials that cannot learn are, once it has finished
    assert "0.01" not in stopped and len(stopped) >= 1
    # each trial's curve is in the project, and a stopped one is not among the curves compared with
    project = Path(cfg.tuner.directory) / cfg.tuner.project_name
    records = [json.loads((project / "curves" / f"trial{r.data.tags['tuner.trial_id']}.json").read_text()) for r in trials]
    assert sum(r["stopped"] is not None for r in records) == len(stopped)
    assert [pytest.approx(c) for c in prune.finished_curves(project)] == finished
    # and the search's ranking of its trials says which were stopped, and when
    parent = next(r for r in runs if r.data.tags.get("pipeline.command") == "tune")
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "search/trials.csv", str(tmp_path)), dtype={"trial_id": str})
    by_id = dict(zip(table["trial_id"], table["stopped_after_epoch"]))
    assert sorted(by_id[r.data.tags["tuner.trial_id"]] for r in trials if "tuner.pruned" in r.data.tags) == [2] * len(stopped)
    assert all(math.isnan(by_id[r.data.tags["tuner.trial_id"]]) for r in trials if "tuner.pruned" not in r.data.tags)


def test_the_rule_compares_with_the_best_each_finished_trial_had_by_the_same_epoch() -> None:
    finished = [[0.5, 0.8, 0.9], [0.6, 0.7], [0.4, 0.6, 0.95, 0.97]]
    # by epoch 2 the finished trials had 0.8, 0.7 (it ended there) and 0.6: median 0.7
    assert prune.decide([0.5, 0.69], finished, "max", 3, 2) == prune.Stop(2, 0.69, 0.7, 3)
    assert prune.decide([0.5, 0.7], finished, "max", 3, 2) is None  # level is not behind
    assert prune.decide([0.1], finished, "max", 3, 2) is None  # before min_epochs
    assert prune.decide([0.1, 0.1], finished, "max", 4, 2) is None  # fewer finished trials than min_trials
    # by epoch 3: 0.9, 0.7 (its best, ended at 2) and 0.95: median 0.9
    assert prune.decide([0.5, 0.6, 0.85], finished, "max", 3, 2) == prune.Stop(3, 0.85, 0.9, 3)
    # losses: lower is better
    assert prune.decide([1.2, 1.1], [[1.0, 0.5], [0.9, 0.8], [1.5, 1.4]], "min", 1, 2) == prune.Stop(2, 1.1, 0.8, 3)
    # a diverged trial (NaN so far) is behind any; a finished trial with nothing but NaN is not compared with
    diverged = prune.decide([math.nan, math.nan], [[0.2, 0.3]], "max", 1, 2)
    assert diverged is not None and (diverged.epoch, diverged.median, diverged.trials) == (2, 0.3, 1) and math.isnan(diverged.score)
    assert prune.decide([0.1, 0.1], [[math.nan, math.nan]], "max", 1, 2) is None
    assert prune.Stop(3, 0.7840, 0.8780, 5).describe("val_accuracy") == \
        "stopped after epoch 3: val_accuracy 0.7840 behind 0.8780, the median of 5 finished trials by then"


values = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=8), st.lists(st.lists(values, min_size=1, max_size=8), max_size=6),
       st.sampled_from(["max", "min"]), st.integers(1, 7), st.integers(1, 9))
@example([0.5, 0.5], [[0.5, 0.6], [0.4, 0.5]], "max", 1, 1)
def test_the_rule_stops_only_a_trial_strictly_behind_the_median(own, finished, direction, min_trials, min_epochs) -> None:
    stop = prune.decide(own, finished, direction, min_trials, min_epochs)
    epoch = len(own)
    sign = 1 if direction == "max" else -1
    mine = [sign * v for v in own if not math.isnan(v)]
    peers = [max(h) for h in ([sign * v for v in c[:epoch] if not math.isnan(v)] for c in finished) if h]
    if epoch < min_epochs or len(peers) < min_trials:
        assert stop is None
        return
    median = statistics.median(peers)
    if not mine:  # nothing but NaN: behind
        assert stop is not None and math.isnan(stop.score)
    elif max(mine) < median:
        assert stop is not None and stop.epoch == epoch and stop.trials == len(peers)
        assert stop.score == sign * max(mine) and stop.median == pytest.approx(sign * median, nan_ok=True)
    else:  # level with the median or ahead of it (inf included): never stopped
        assert stop is None


def test_curves_are_read_back_as_written_and_a_stopped_or_unreadable_one_is_not_compared_with(tmp_path: Path) -> None:
    prune.record(tmp_path, "00", [0.5, 0.7], None)
    prune.record(tmp_path, "01", [0.2, 0.3], prune.Stop(2, 0.3, 0.6, 1))
    prune.record(tmp_path, "02", [0.6, 0.8, 0.9], None)
    (tmp_path / "curves" / "trial03.json").write_text('{"trial_id": "03", "curve": [0.9')  # cut off mid-write by hand
    assert prune.finished_curves(tmp_path) == [[0.5, 0.7], [0.6, 0.8, 0.9]]
    assert json.loads((tmp_path / "curves" / "trial01.json").read_text())["stopped"] == {"epoch": 2, "median": 0.6, "trials": 1}
    assert not [p for p in (tmp_path / "curves").iterdir() if p.suffix != ".json"]  # nothing left beside


@pytest.mark.parametrize("overrides, rule", [([], "median"), (["tuner=bayesian"], "median"), (["tuner=hyperband"], "none"),
                                             (["+experiment=sst2_search"], "none")])
def test_random_and_bayesian_searches_stop_trials_by_default_hyperband_and_the_preset_do_not(overrides, rule) -> None:
    from pipeline.config import compose_train

    cfg = compose_train(overrides, config_name="tune")
    assert (str(cfg.tuner.prune.rule), cfg.tuner.prune.min_trials, cfg.tuner.prune.min_epochs) == (rule, 3, 2)


def _epochs(stopper, values, epochs: int, stopped_by_early_stopping_at: int = 0) -> list:
    """Run ``stopper`` over an objective curve as Keras would; the epochs after which it set stop_training."""
    from types import SimpleNamespace

    model = SimpleNamespace(stop_training=False)
    stopper.set_model(model)
    stopper.set_params({"epochs": epochs})
    stops = []
    for epoch, value in enumerate(values):
        model.stop_training = epoch + 1 == stopped_by_early_stopping_at  # early stopping runs first
        stopper.on_epoch_end(epoch, {"val_accuracy": value})
        if model.stop_training and epoch + 1 != stopped_by_early_stopping_at:
            stops.append(epoch + 1)
        if model.stop_training:
            break
    return stops


def test_a_fit_that_ends_anyway_is_not_counted_as_stopped_and_a_trial_is_never_its_own_peer(tmp_path: Path) -> None:
    for trial_id in ("00", "01", "02"):
        prune.record(tmp_path, trial_id, [0.8, 0.9, 0.95], None)
    behind = [0.3, 0.4, 0.5, 0.6]
    stopper, stops = prune.callback(tmp_path, "03", "val_accuracy", "max", 3, 2)
    assert _epochs(stopper, behind, epochs=4) == [2] and stops[0].epoch == 2  # behind after its second epoch: stopped
    # early stopping ends the fit after epoch 2 anyway: not a stop of the rule's
    stopper, stops = prune.callback(tmp_path, "03", "val_accuracy", "max", 3, 2)
    assert _epochs(stopper, behind, epochs=4, stopped_by_early_stopping_at=2) == [] and stops == []
    # nor is a fit's last epoch
    stopper, stops = prune.callback(tmp_path, "03", "val_accuracy", "max", 3, 2)
    assert _epochs(stopper, behind[:2], epochs=2) == [] and stops == []
    # trial 02 run again (its curve of the first run kept) compares with 00 and 01 only: too few
    stopper, stops = prune.callback(tmp_path, "02", "val_accuracy", "max", 3, 2)
    assert _epochs(stopper, behind, epochs=4) == [] and stops == []


def test_each_execution_of_a_trial_stops_where_the_first_stopped(tmp_path: Path) -> None:
    import copy

    for trial_id in ("00", "01", "02"):
        prune.record(tmp_path, trial_id, [0.5, 0.6, 0.7, 0.8], None)
    stopper, stops = prune.callback(tmp_path, "03", "val_accuracy", "max", 3, 2)
    first, second = copy.deepcopy(stopper), copy.deepcopy(stopper)  # as Keras Tuner copies a trial's callbacks
    assert _epochs(first, [0.4, 0.5, 0.9, 0.9], epochs=4) == [2]
    # the second execution is ahead at epoch 2 on its own, and stops there all the same
    assert _epochs(second, [0.4, 0.65, 0.9, 0.9], epochs=4) == [2] and len(stops) == 1


def test_early_stopping_sees_each_epoch_before_the_callbacks_a_fit_is_given(make_cfg) -> None:
    import keras

    from pipeline import experiment
    from pipeline.model import build_model

    # a learning rate that cannot move the weights: validation accuracy never improves on the first
    # epoch's, so early stopping (patience 0) ends the fit after epoch 2
    cfg = make_cfg("dataset.max_samples=200", "training.epochs=6", "training.early_stopping.patience=0",
                   "training.early_stopping.monitor=val_accuracy", "training.learning_rate=1e-12")
    prepared = experiment.prepare(cfg)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.stop_training)

    history = experiment.fit(build_model(cfg, prepared.shape), prepared, cfg.training, cfg.seed, callbacks=[Spy()])
    assert len(history.history["loss"]) == 2 and seen == [False, True]
