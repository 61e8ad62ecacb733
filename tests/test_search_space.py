"""The YAML search space compiled to Keras Tuner hyperparameters."""

from __future__ import annotations

import pytest
from conftest import write_sentiment_csv

from pipeline.errors import ConfigError
from pipeline.search_space import compile_space


def _values(space: dict, name: str, draws: int = 300) -> set:
    (param,) = [p for p in compile_space(space).space if p.name == name]
    return {round(float(param.random_sample(seed)), 6) for seed in range(draws)}


def test_a_float_range_with_a_step_includes_its_max() -> None:
    # Keras Tuner alone never draws 0.6 here: (0.6 - 0.3) / 0.1 is 2.999... in floating point
    assert _values({"dropout": {"type": "float", "min": 0.3, "max": 0.6, "step": 0.1}}, "dropout") == {0.3, 0.4, 0.5, 0.6}
    assert _values({"dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.1}}, "dropout") == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}


def test_every_declared_kind_compiles_and_each_value_is_drawn() -> None:
    space = {
        "units": {"type": "int", "min": 32, "max": 96, "step": 32},
        "embedding_dim": {"type": "choice", "values": [64, 128]},
        "pooling": {"type": "choice", "values": ["last", "max"]},
        "bidirectional": {"type": "boolean"},
    }
    assert _values(space, "units") == {32, 64, 96}
    assert _values(space, "embedding_dim") == {64, 128}
    assert {p.name for p in compile_space(space).space} == set(space)


def test_a_name_the_model_does_not_have_is_refused() -> None:
    with pytest.raises(ConfigError, match="width: not a searchable setting"):
        compile_space({"width": {"type": "int", "min": 1, "max": 2}})


def test_an_hp_call_the_yaml_does_not_declare_is_an_error(make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from pipeline import experiment, tuning

    cfg = make_cfg("dataset.max_samples=100", config_name="tune")
    prepared = experiment.prepare(cfg)
    real = tuning.build_model

    def model_code_with_an_extra_knob(model_cfg, training_cfg, shape, hp=None, embedding_matrix=None):
        hp.Int("attention_heads", 1, 4)  # not in conf/search_space
        return real(model_cfg, training_cfg, shape, hp=hp, embedding_matrix=embedding_matrix)

    monkeypatch.setattr(tuning, "build_model", model_code_with_an_extra_knob)
    project = tuning.Project(tmp_path / "tuner", "p", {})
    with pytest.raises(RuntimeError, match="allow_new_entries.*attention_heads"):
        tuning.make_tuner(cfg, prepared, project, "no-parent", tuning.validate(cfg))


def test_random_search_samples_every_value_evenly(make_cfg, tmp_path) -> None:
    """The first SST-2 space (four values a trial) from seed 42: Keras Tuner's own seeding gave
    embedding_dim=128 in every trial."""
    from collections import Counter

    from pipeline import experiment, tuning

    csv = write_sentiment_csv(tmp_path / "d.csv", n=60)
    cfg = make_cfg("+experiment=sst2_search", "dataset=files", f"dataset.path={csv}",
                   "dataset.val_path=null", "dataset.test_path=null", "seed=42",
                   "search_space.units={type:int,min:64,max:256,step:64}", "search_space.dropout={type:float,min:0.3,max:0.6,step:0.1}",
                   "~search_space.pooling", config_name="tune")
    assert list(cfg.search_space) == ["units", "embedding_dim", "dropout", "bidirectional"]
    prepared = experiment.prepare(cfg)
    project = tuning.Project(tmp_path / "tuner", "p", {})
    oracle = tuning.make_tuner(cfg, prepared, project, None, tuning.validate(cfg)).oracle
    draws = [oracle._random_values() for _ in range(200)]
    embedding = Counter(d["embedding_dim"] for d in draws[:12])
    assert set(embedding) == {128, 256}, embedding  # both values within the first 12 trials
    for name, values in (("embedding_dim", [128, 256]), ("bidirectional", [False, True]), ("units", [64, 128, 192, 256])):
        counts = Counter(d[name] for d in draws)
        assert set(counts) == set(values)
        assert min(counts.values()) >= 0.6 * 200 / len(values), (name, counts)  # none starved
