"""Each Keras Tuner workaround in pipeline/tuning/compat.py: still needed (Keras Tuner alone shows
the fault, so these fail once a release fixes it and the workaround can go) and still applied
(Keras Tuner still calls the method the pipeline's oracle replaces)."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, List

import keras_tuner
import pytest

from pipeline.search_space import compile_space
from pipeline.tuning import compat


def _oracle(directory: Path, cls: Any = compat.RandomSearchOracle) -> Any:
    hp = keras_tuner.HyperParameters()
    hp.Int("model.units", 8, 64, step=8)
    oracle = cls(objective="val_accuracy", max_trials=4, hyperparameters=hp, seed=1)
    oracle._set_project_dir(str(directory), "p")
    return oracle


def _complete(oracle: Any, score: float) -> Any:
    trial = oracle.create_trial("tuner0")
    oracle.update_trial(trial.trial_id, {"val_accuracy": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    return trial


# --- whole state files ----------------------------------------------------------------------


def test_keras_tuner_alone_leaves_a_cut_off_state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keras_tuner.src.backend import io

    oracle = _oracle(tmp_path, keras_tuner.oracles.RandomSearchOracle)
    oracle.save()
    assert json.loads((tmp_path / "p" / "oracle.json").read_text())
    real = io.File

    class Dying:  # the process is killed while writing
        def __init__(self, path: str, mode: str) -> None:
            self.f = real(path, mode)

        def __enter__(self) -> "Dying":
            return self

        def __exit__(self, *exc: Any) -> None:
            self.f.close()

        def write(self, text: str) -> None:
            self.f.write(text[: len(text) // 2])
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "File", Dying)
    with pytest.raises(KeyboardInterrupt):
        oracle.save()
    with pytest.raises(json.JSONDecodeError):  # no later run can reload it
        json.loads((tmp_path / "p" / "oracle.json").read_text())


def test_the_pipelines_oracle_writes_every_state_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: List[str] = []
    real = compat.write_json
    monkeypatch.setattr(compat, "write_json", lambda path, obj: written.append(Path(path).name) or real(path, obj))
    oracle = _oracle(tmp_path)
    _complete(oracle, 0.7)
    # Keras Tuner still saves through the two methods the oracle replaces
    assert {"oracle.json", "trial.json"} <= set(written), written
    before = (tmp_path / "p" / "oracle.json").read_text()

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compat.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _complete(oracle, 0.8)
    assert (tmp_path / "p" / "oracle.json").read_text() == before  # the old state, whole


# --- uncorrelated random draws -----------------------------------------------------------------

#: The first SST-2 space: four values a trial, searched from seed 42.
SST2_SPACE = {
    "model.units": {"type": "int", "min": 64, "max": 256, "step": 64},
    "model.embedding_dim": {"type": "choice", "values": [128, 256]},
    "model.dropout": {"type": "float", "min": 0.3, "max": 0.6, "step": 0.1},
    "model.bidirectional": {"type": "boolean"},
}


def _draws(cls: Any, n: int) -> List[dict]:
    oracle = cls(objective="val_accuracy", max_trials=n, hyperparameters=compile_space(SST2_SPACE), seed=42)
    return [oracle._random_values() for _ in range(n)]


def test_keras_tuner_alone_draws_one_embedding_size_for_the_first_twelve_trials() -> None:
    draws = _draws(keras_tuner.oracles.RandomSearchOracle, 12)
    assert {d["model.embedding_dim"] for d in draws} == {128}


def test_the_pipelines_oracle_samples_every_value_evenly() -> None:
    draws = _draws(compat.RandomSearchOracle, 200)
    assert {d["model.embedding_dim"] for d in draws[:12]} == {128, 256}  # both within the first 12 trials
    for name, values in (("model.embedding_dim", [128, 256]), ("model.bidirectional", [False, True]),
                         ("model.units", [64, 128, 192, 256])):
        counts = Counter(d[name] for d in draws)
        assert set(counts) == set(values)
        assert min(counts.values()) >= 0.6 * 200 / len(values), (name, counts)  # none starved


@pytest.mark.parametrize("name", ["bayesian", "hyperband"])
def test_every_oracle_draws_through_the_pipelines_sampling(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[int] = []
    real = compat._mixed_seed
    monkeypatch.setattr(compat, "_mixed_seed", lambda state: calls.append(state) or real(state))
    extra = {"max_epochs": 3} if name == "hyperband" else {"max_trials": 3}
    oracle = compat.ORACLES[name](objective="val_accuracy", hyperparameters=compile_space(SST2_SPACE), seed=1, **extra)
    oracle.populate_space("0")
    assert calls, f"{name}: Keras Tuner no longer draws through Oracle._random_values"


# --- state that agrees after a crash -------------------------------------------------------------


def _crash_between_the_two_writes(tmp_path: Path) -> tuple:
    oracle = _oracle(tmp_path, keras_tuner.oracles.RandomSearchOracle)
    first = _complete(oracle, 0.7)
    second = oracle.create_trial("tuner0")
    # The two crashes between Keras Tuner's writes: trial 0's file says COMPLETED while the
    # oracle's file still has it ongoing; trial 1's file exists (RUNNING) but the oracle's
    # file was not written after it.
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())
    state["ongoing_trials"] = {"tuner0": first.trial_id}
    state["end_order"] = []
    (tmp_path / "p" / "oracle.json").write_text(json.dumps(state))
    return first.trial_id, second.trial_id


def test_a_trial_file_and_the_oracle_file_disagreeing_after_a_kill_are_reconciled(tmp_path: Path) -> None:
    first, second = _crash_between_the_two_writes(tmp_path)
    alone = _oracle(tmp_path, keras_tuner.oracles.RandomSearchOracle)
    alone.reload()
    assert alone._retry_queue == [first]  # Keras Tuner alone would run trial 0 again, and never trial 1

    reloaded = _oracle(tmp_path)
    reloaded.reload()
    assert reloaded._retry_queue == [second]
    assert reloaded.end_order == [first]
    assert reloaded.create_trial("tuner0").trial_id == second
    again = _oracle(tmp_path, keras_tuner.oracles.RandomSearchOracle)  # and the repair was saved
    again.reload()
    assert again._retry_queue == [second]


def test_a_reloaded_search_ranks_equal_scores_in_the_order_the_trials_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oracle = _oracle(tmp_path)
    ids = [_complete(oracle, 0.75).trial_id for _ in range(3)]  # a tie, as on a small validation split
    assert oracle.get_best_trials(1)[0].trial_id == ids[0]

    from keras_tuner.src.backend import io

    glob = io.glob
    monkeypatch.setattr(io, "glob", lambda pattern: sorted(glob(pattern), reverse=True))  # another file system's order
    alone = _oracle(tmp_path, keras_tuner.oracles.RandomSearchOracle)
    alone.reload()
    assert alone.get_best_trials(1)[0].trial_id == ids[-1]  # Keras Tuner alone: another best trial
    reloaded = _oracle(tmp_path)
    reloaded.reload()
    assert reloaded.get_best_trials(1)[0].trial_id == ids[0]


# --- Hyperband over a given oracle ------------------------------------------------------------------


def test_hyperband_runs_over_the_pipelines_oracle(tmp_path: Path) -> None:
    class Model(keras_tuner.HyperModel):
        def build(self, hp: Any) -> Any:
            return None

    oracle = compat.HyperbandOracle(objective="val_accuracy", hyperparameters=compile_space(SST2_SPACE), max_epochs=3, seed=1)
    tuner = compat.tuner_class("hyperband")(oracle=oracle, hypermodel=Model(), directory=str(tmp_path), project_name="p")
    assert tuner.oracle is oracle
    assert isinstance(tuner, keras_tuner.Hyperband)  # Hyperband's trial logic (epochs per round, carried weights)
    tuner.save()
    assert json.loads((tmp_path / "p" / "oracle.json").read_text())


# --- no line of its own on a resume ------------------------------------------------------------


def _reloaded(tmp_path: Path, cls: Any, capsys: pytest.CaptureFixture) -> str:
    class Model(keras_tuner.HyperModel):
        def build(self, hp: Any) -> Any:
            return None

    def make() -> Any:
        oracle = compat.RandomSearchOracle(objective="val_accuracy", hyperparameters=compile_space(SST2_SPACE), max_trials=2, seed=1)
        return cls(oracle=oracle, hypermodel=Model(), directory=str(tmp_path), project_name="p")

    make().save()
    capsys.readouterr()
    make()  # the same project again: reloaded
    return capsys.readouterr().out


def test_keras_tuner_alone_prints_a_line_as_it_reloads_a_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _reloaded(tmp_path, keras_tuner.Tuner, capsys).startswith(compat.RELOAD_LINE)


def test_the_pipelines_tuner_reloads_a_project_without_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _reloaded(tmp_path, compat.tuner_class("random"), capsys) == ""
    with compat._without_reload_line():  # anything else printed meanwhile still reaches stdout
        print("Reloading Tuner from x.json")
        print("another line")
    assert capsys.readouterr().out == "another line\n"


# --- values as written ---------------------------------------------------------------------------

#: 0.1 to 0.3 by 0.1: Keras Tuner draws min + 2 * step = 0.30000000000000004.
STEP_SPACE = {"model.dropout": {"type": "float", "min": 0.1, "max": 0.3, "step": 0.1}}


def test_keras_tuner_alone_draws_a_step_as_a_sum_with_its_rounding_error() -> None:
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=3, hyperparameters=compile_space(STEP_SPACE), seed=1)
    assert 0.30000000000000004 in {oracle.populate_space(str(i))["values"]["model.dropout"] for i in range(3)}


@pytest.mark.parametrize("name", ["random", "bayesian", "hyperband"])
def test_every_oracle_gives_its_trials_the_values_as_written(name: str, tmp_path: Path) -> None:
    """What a trial's line, ``hp.*`` params and config show: 0.3, not 0.30000000000000004."""
    extra = {"max_epochs": 3} if name == "hyperband" else {"max_trials": 3}
    oracle = compat.ORACLES[name](objective="val_accuracy", hyperparameters=compile_space(STEP_SPACE), seed=1, **extra)
    oracle._set_project_dir(str(tmp_path), "p")
    trials = [oracle.create_trial(f"tuner{i}") for i in range(3)]  # three at once: none ends
    assert sorted(str(t.hyperparameters.values["model.dropout"]) for t in trials) == ["0.1", "0.2", "0.3"]


# --- no configuration twice (Bayesian) ------------------------------------------------------------

#: How a search's trials score, by width.
SCORES = {"wider is better": lambda units: units / 100, "one width best": lambda units: 0.9 if units == 32 else 0.5}


def _bayesian_search(cls: Any, directory: Path, max_trials: int, score: Any, space: Any = None) -> List[dict]:
    """A Bayesian search run to its end (two random trials, then the Gaussian process's), each
    trial scored by ``score``; the values of the trials it ran, in order."""
    if space is None:
        space = keras_tuner.HyperParameters()
        space.Int("model.units", 8, 64, step=8)  # eight widths
    oracle = cls(objective="val_accuracy", max_trials=max_trials, hyperparameters=space, seed=1, num_initial_points=2)
    oracle._set_project_dir(str(directory), "p")
    ran: List[dict] = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            return ran
        ran.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_accuracy": score(ran[-1])})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_keras_tuner_alone_proposes_a_configuration_it_already_ran(score: Any, tmp_path: Path) -> None:
    ran = [v["model.units"] for v in _bayesian_search(keras_tuner.oracles.BayesianOptimizationOracle, tmp_path, 8, lambda v: score(v["model.units"]))]
    assert len(ran) == 8 and len(set(ran)) < 8, ran  # the same width trained again, to the same score


@pytest.mark.parametrize("score", SCORES.values(), ids=SCORES.keys())
def test_the_pipelines_bayesian_oracle_runs_each_configuration_once_then_stops(score: Any, tmp_path: Path) -> None:
    ran = [v["model.units"] for v in _bayesian_search(compat.BayesianOptimizationOracle, tmp_path, 12, lambda v: score(v["model.units"]))]
    # no width twice; it stops, as a random search does, when its draws keep finding tried ones (more
    # than 20 in a row: here after seven or all eight widths), though 12 trials were allowed
    assert len(set(ran)) == len(ran) and 7 <= len(ran) <= 8, ran


def test_the_pipelines_bayesian_oracle_does_not_show_the_gaussian_process_fit_warning(tmp_path: Path) -> None:
    """Trials that all score the same: the Gaussian process's length scale ends at its bound, which
    scikit-learn warns about at each proposal; nothing a user can act on."""
    from sklearn.exceptions import ConvergenceWarning

    space = compile_space({"model.units": {"type": "int", "min": 32, "max": 256, "step": 32},
                           "model.embedding_dim": {"type": "choice", "values": [32, 64, 128, 256]}})
    with pytest.warns(ConvergenceWarning):
        _bayesian_search(keras_tuner.oracles.BayesianOptimizationOracle, tmp_path / "alone", 8, lambda v: 0.5, space)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ran = _bayesian_search(compat.BayesianOptimizationOracle, tmp_path / "pipeline", 8, lambda v: 0.5, space)
    assert len(ran) == 8 and len({tuple(sorted(v.items())) for v in ran}) == 8
