"""The YAML search space compiled to Keras Tuner hyperparameters."""

from __future__ import annotations

import pytest
from conftest import write_sentiment_csv

from pipeline.errors import ConfigError
from pipeline.search_space import compile_space, describe, with_values


def _values(space: dict, name: str, draws: int = 300) -> set:
    (param,) = [p for p in compile_space(space).space if p.name == name]
    return {round(float(param.random_sample(seed)), 6) for seed in range(draws)}


def test_a_float_range_with_a_step_includes_its_max() -> None:
    # Keras Tuner alone never draws 0.6 here: (0.6 - 0.3) / 0.1 is 2.999... in floating point
    assert _values({"model.dropout": {"type": "float", "min": 0.3, "max": 0.6, "step": 0.1}}, "model.dropout") == {0.3, 0.4, 0.5, 0.6}
    assert _values({"model.dropout": {"type": "float", "min": 0.0, "max": 0.5, "step": 0.1}}, "model.dropout") == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}


def test_every_declared_kind_compiles_and_each_value_is_drawn() -> None:
    space = {
        "model.units": {"type": "int", "min": 32, "max": 96, "step": 32},
        "model.embedding_dim": {"type": "choice", "values": [64, 128]},
        "model.pooling": {"type": "choice", "values": ["last", "max"]},
        "model.bidirectional": {"type": "boolean"},
    }
    assert _values(space, "model.units") == {32, 64, 96}
    assert _values(space, "model.embedding_dim") == {64, 128}
    assert {p.name for p in compile_space(space).space} == set(space)


def test_a_name_the_model_does_not_have_is_refused() -> None:
    with pytest.raises(ConfigError, match="width: not a searchable setting"):
        compile_space({"width": {"type": "int", "min": 1, "max": 2}})
    with pytest.raises(ConfigError, match="units: not a searchable setting; did you mean model.units"):
        compile_space({"units": {"type": "int", "min": 1, "max": 2}})


def test_an_hp_call_the_yaml_does_not_declare_is_an_error(make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from pipeline import experiment
    from pipeline.tuning import hypermodel, tuners
    from pipeline.tuning.project import Project

    cfg = make_cfg("dataset.max_samples=100", config_name="tune")
    prepared = experiment.prepare(cfg)
    real = hypermodel.LSTMHyperModel.build

    def model_code_with_an_extra_knob(self, hp):
        model = real(self, hp)
        hp.Int("attention_heads", 1, 4)  # not in conf/search_space
        return model

    monkeypatch.setattr(hypermodel.LSTMHyperModel, "build", model_code_with_an_extra_knob)
    project = Project(tmp_path / "tuner", "p", {})
    with pytest.raises(RuntimeError, match="allow_new_entries.*attention_heads"):
        tuners.make_tuner(cfg, prepared, project, "no-parent", tuners.validate(cfg))


def test_the_search_draws_through_the_pipelines_oracle(make_cfg, tmp_path) -> None:
    """The first SST-2 space from seed 42, as the README's preset composes it: Keras Tuner's own
    seeding gave model.embedding_dim=128 in every one of the first 12 trials (tests/test_keras_tuner_compat.py)."""
    from pipeline import experiment
    from pipeline.tuning import tuners
    from pipeline.tuning.project import Project

    csv = write_sentiment_csv(tmp_path / "d.csv", n=60)
    cfg = make_cfg("+experiment=sst2_search", "dataset=files", f"dataset.path={csv}",
                   "dataset.val_path=null", "dataset.test_path=null", "seed=42",
                   "search_space.model.units={type:int,min:64,max:256,step:64}",
                   "search_space.model.dropout={type:float,min:0.3,max:0.6,step:0.1}",
                   "~search_space.model.pooling", config_name="tune")
    assert list(describe(cfg.search_space)) == ["model.units", "model.embedding_dim", "model.dropout", "model.bidirectional"]
    prepared = experiment.prepare(cfg)
    oracle = tuners.make_tuner(cfg, prepared, Project(tmp_path / "tuner", "p", {}), None, tuners.validate(cfg)).oracle
    draws = [oracle._random_values() for _ in range(12)]
    assert {d["model.embedding_dim"] for d in draws} == {128, 256}


def test_a_trial_is_a_config_update_the_model_is_built_from(make_cfg) -> None:
    import keras

    from pipeline.model import DataShape, build_model

    cfg = make_cfg()
    values = {"model.units": 12, "model.embedding_dim": 6, "model.bidirectional": True,
              "training.learning_rate": 0.005, "tuner/epochs": 3}
    trial = with_values(cfg, values)
    assert (trial.model.units, trial.training.learning_rate, trial.training.epochs) == (12, 0.005, cfg.training.epochs)
    assert cfg.model.units == 8, "the search's own config is left as it was"
    model = build_model(trial, DataShape(vocab_size=40, num_classes=2))
    assert model.get_layer("embedding").output_dim == 6
    assert model.get_layer("bilstm_0").forward_layer.units == 12
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.005)


def test_nested_and_dotted_entries_name_the_same_paths() -> None:
    nested = {"model": {"units": {"type": "int", "min": 8, "max": 16}}, "training": {"learning_rate": {"type": "float", "min": 0.001, "max": 0.01}}}
    dotted = {"model.units": {"type": "int", "min": 8, "max": 16}, "training.learning_rate": {"type": "float", "min": 0.001, "max": 0.01}}
    assert describe(nested) == describe(dotted)
    assert [p.name for p in compile_space(nested).space] == ["model.units", "training.learning_rate"]
    assert [p.name for p in compile_space({"training": {"early_stopping": {"patience": {"type": "int", "min": 1, "max": 3}}}}).space] == [
        "training.early_stopping.patience"]


@pytest.mark.parametrize("entry, fragment", [
    ({"model.name": {"type": "choice", "values": ["a", "b"]}}, "not a searchable setting"),
    ({"model.pretrained.trainable": {"type": "boolean"}}, "not a searchable setting"),
    ({"model.pretrained": {"type": "boolean"}}, "not a searchable setting"),
    ({"dataset.vocab_size": {"type": "int", "min": 1, "max": 2}}, "not a searchable setting"),
    ({"model.bidirectional": {"type": "choice", "values": ["sometimes"]}}, "'sometimes' is not a valid model.bidirectional"),
    ({"model.num_layers": {"type": "float", "min": 1, "max": 2.5}}, "2.5 is not a valid model.num_layers"),
])
def test_a_path_a_trial_cannot_set_is_refused(entry: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        compile_space(entry)
