"""The validation pass (pipeline/validate.py) over the whole input space: every key of the train and
tune schemas (derived from the dataclasses, so a new key is covered without a change here) with
values of wrong types, out of range and off the enums, ``+`` keys with typos, and search spaces of
every entry type in every wrong shape. Each example is valid (then it builds a model, and a search
space builds one at every end and at random draws) or refused with one line; nothing is written.
Through the CLI, the cases a user met: one line, and an empty directory left behind."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from conftest import SHRINK, assert_one_line_error, run_cli, write_sentiment_csv
from pipeline.config import CONF_DIR, TUNER_SCHEMAS, TrainConfig, TuneConfig, TunerConfig
from pipeline.errors import ConfigError, DataError, PipelineError

#: Examples per property in the default suite; `-m stress` runs STRESS times as many.
EXAMPLES = {"keys": 40, "space": 50}
STRESS = 10
SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much]


def schema_keys(schema: type, prefix: str = "") -> Dict[str, Any]:
    """Every leaf setting of a schema dataclass: dotted path -> type hint."""
    hints = typing.get_type_hints(schema)
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind) and kind is not TunerConfig:
            out.update(schema_keys(kind, f"{prefix}{f.name}."))
        elif kind is not TunerConfig:
            out[f"{prefix}{f.name}"] = kind
    return out


TRAIN_KEYS = schema_keys(TrainConfig)
TUNE_KEYS = {name: {**schema_keys(TuneConfig), **schema_keys(schema, "tuner.")} for name, schema in TUNER_SCHEMAS.items()}
#: The groups a config is composed from (a few of each, to keep compositions few and cached).
GROUPS = [(), ("dataset=files", "dataset.path=x.csv"), ("dataset=mr",), ("model=stacked_bilstm",)]
TUNER_GROUPS = [(), ("tuner=hyperband",), ("tuner=bayesian",)]


# --- values, by the type the schema gives a key --------------------------------------------------

WRONG = st.sampled_from(["abc", "", " ", None, True, 1.5, -1, [1], {"a": 1}, "${oc.env:PIPELINE_NO_SUCH_VARIABLE}", "???"])
INTS = st.one_of(st.integers(-3, 8), st.sampled_from([0, 1, 2, 100, 2**32, 2**63, -(2**40)]))
FLOATS = st.one_of(st.sampled_from([-1.0, 0.0, 1e-12, 0.1, 0.5, 0.9, 1.0, 1.5, 99.5, 100.0, 150.0, 1e9]),
                   st.floats(allow_nan=True, allow_infinity=True, width=32))
TEXT = st.one_of(
    st.sampled_from(["", " ", "0", "1", "-1", "auto", "text", "label", "x.csv", "nope.csv", ".", "/", ";;", ",", "\t", "\n",
                     '"', "utf-8", "latin-1", "no-such-codec", "sqlite:///x/mlflow.db", "http://127.0.0.1:9", "a/b", "..", "é"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="$\\"), max_size=12),
)


def values_for(kind: Any) -> st.SearchStrategy:
    """Values of the right type (in range or not) and of wrong types, for a schema type hint."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union and type(None) in args:
        return st.one_of(st.none(), values_for(next(a for a in args if a is not type(None))))
    if origin in (list, List):
        return st.one_of(st.lists(values_for(args[0]), max_size=4), WRONG)
    if kind is Any:  # dataset.class_files: {label: file}, of any shape
        return st.one_of(st.dictionaries(st.sampled_from(["pos", "neg", "a"]), TEXT, max_size=3), WRONG, TEXT)
    if origin in (dict, Dict):
        return st.one_of(st.dictionaries(st.sampled_from(["pos", "neg", "a"]), TEXT, max_size=3), WRONG)
    if isinstance(kind, type) and issubclass(kind, Enum):
        valid = [str(v) for v in kind]
        return st.one_of(st.sampled_from(valid), st.sampled_from(valid).map(str.upper), WRONG, st.just("bogus"))
    if kind is bool:
        return st.one_of(st.booleans(), WRONG, st.sampled_from(["maybe", 2]))
    if kind is int:
        return st.one_of(INTS, INTS, WRONG)
    if kind is float:
        return st.one_of(FLOATS, FLOATS, INTS, WRONG)
    return st.one_of(TEXT, TEXT, WRONG)


def _text(value: str) -> str:
    """A Python string as a quoted Hydra override value (backslashes before a quote doubled)."""
    return "'" + re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'") + "'"


def rendered(value: Any) -> str:
    """A Python value as Hydra's override grammar writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(rendered(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{rendered(v)}" for k, v in value.items()) + "}"
    return _text(str(value))


def misspelled(key: str, draw: Any) -> str:
    """``key`` with one letter of its last part dropped, doubled or changed: not a setting."""
    *parents, leaf = key.split(".")
    i = draw(st.integers(0, len(leaf) - 1))
    leaf = draw(st.sampled_from([leaf[:i] + leaf[i + 1:], leaf[:i] + leaf[i] + leaf[i:], leaf[:i] + "z" + leaf[i + 1:], leaf + "s"]))
    return ".".join([*parents, leaf or "z"])


@st.composite
def config_overrides(draw: Any, tune: bool) -> Tuple[Tuple[str, ...], List[str], List[str]]:
    """(group overrides, key overrides, the keys they name): 1-3 keys of the schema with any value,
    or a ``+``/``++`` key that is not in it."""
    groups = draw(st.sampled_from(GROUPS)) + (draw(st.sampled_from(TUNER_GROUPS)) if tune else ())
    tuner = next((g.split("=")[1] for g in groups if g.startswith("tuner=")), "random")
    keys = TUNE_KEYS[tuner] if tune else TRAIN_KEYS
    keys = {k: v for k, v in keys.items() if k != "search_space"}
    chosen = draw(st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=3, unique=True))
    overrides = [f"{k}={rendered(draw(values_for(keys[k])))}" for k in chosen]
    if draw(st.integers(0, 3)) == 0:  # a misspelled key, added with + (or ++), as a user's typo would be
        wrong = misspelled(draw(st.sampled_from(sorted(keys))), draw)
        if wrong not in keys:
            overrides.append(f"{draw(st.sampled_from(['+', '++']))}{wrong}={rendered(draw(values_for(int)))}")
            chosen.append(wrong)
    return groups, overrides, chosen


# --- search spaces ---------------------------------------------------------------------------------

SEARCHABLE = sorted(k for k in TRAIN_KEYS if k.startswith(("model.", "training.")) and not k.startswith(("model.name", "model.pretrained")))
NOT_SEARCHABLE = ["dataset.vocab_size", "model.name", "model.pretrained.trainable", "units", "training.early_stopping", "tuner.max_trials"]
NUMBER = st.one_of(st.integers(-2, 300), st.sampled_from([0.0, 1e-4, 0.3, 0.5, 0.99, 1.0, 1.5, -0.5, float("nan")]), WRONG)
SAMPLING = st.sampled_from([None, "linear", "log", "reverse_log", "bogus", 1])
STEP = st.sampled_from([None, 0, -1, 0.5, 1, 2, 8, 0.1, "x"])
CHOICE_VALUES = st.one_of(
    st.lists(st.one_of(st.integers(-1, 64), st.sampled_from([0.0, 0.5, 1.5]), st.booleans(), st.sampled_from(["adam", "sgd", "max", "x"]),
                       st.none(), st.just([1]), st.just({"a": 1})), max_size=4),
    st.sampled_from([5, "abc", None, {"a": 1}, True]),
)


def _plausible(path: str, draw: Any) -> Dict[str, Any]:
    """An entry of the type the setting has, with ends that may or may not fit it (units 0, dropout 1)."""
    kind = TRAIN_KEYS.get(path)
    kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if kind is bool:
        return {"type": "boolean"}
    if isinstance(kind, type) and issubclass(kind, Enum):
        return {"type": "choice", "values": draw(st.lists(st.sampled_from([str(v) for v in kind] + ["bogus"]), min_size=1, max_size=3))}
    if kind is int:
        low, high = sorted(draw(st.lists(st.integers(-1, 48), min_size=2, max_size=2)))
        return {"type": "int", "min": low, "max": high, **({"step": draw(st.sampled_from([1, 2, 8]))} if draw(st.booleans()) else {})}
    low, high = sorted(draw(st.lists(st.sampled_from([0.0, 1e-4, 0.001, 0.1, 0.3, 0.5, 0.9, 1.0, 1.5]), min_size=2, max_size=2)))
    sampling = draw(st.sampled_from(["linear", "log"]))
    return {"type": draw(st.sampled_from(["float", "choice"])), "min": low, "max": high, "sampling": sampling} if draw(st.booleans()) else {
        "type": "choice", "values": draw(st.lists(st.sampled_from([0, 0.0, 0.1, 0.5, 1, 1.5]), min_size=1, max_size=3))}


@st.composite
def entries(draw: Any, path: str) -> Any:
    """One search-space entry of any type, in any shape: missing or stray keys, min above max,
    a step of 0, log sampling from 0, a choice of mixed types or of no list, nested, not a mapping;
    or one of the setting's own type, whose ends may or may not fit it."""
    if draw(st.booleans()):
        return _plausible(path, draw)
    kind = draw(st.sampled_from(["int", "float", "choice", "boolean", "fixed", None, "bogus"]))
    entry: Dict[str, Any] = {} if kind is None else {"type": kind}
    if kind in ("int", "float", "fixed", "bogus"):
        for field in ("min", "max"):
            if draw(st.integers(0, 9)):  # usually there, sometimes missing
                entry[field] = draw(NUMBER)
        if (step := draw(STEP)) is not None:
            entry["step"] = step
        if (sampling := draw(SAMPLING)) is not None:
            entry["sampling"] = sampling
    if kind in ("choice", "fixed", None) or draw(st.integers(0, 9)) == 0:
        entry["values"] = draw(CHOICE_VALUES)
    if draw(st.integers(0, 9)) == 0:
        entry[draw(st.sampled_from(["mni", "value", "default"]))] = 1
    return draw(st.sampled_from([entry] * 6 + [{"inner": entry}, 5, [1, 2], "int"]))


@st.composite
def spaces(draw: Any) -> Dict[str, Any]:
    """1-3 entries, written dotted (``model.units: {...}``) or nested (``model: {units: {...}}``)."""
    paths = draw(st.lists(st.one_of(st.sampled_from(SEARCHABLE), st.sampled_from(SEARCHABLE), st.sampled_from(NOT_SEARCHABLE)),
                          min_size=1, max_size=3, unique=True))
    space: Dict[str, Any] = {}
    for path in paths:
        entry = draw(entries(path))
        root, _, rest = path.partition(".")
        if rest and draw(st.booleans()):
            space.setdefault(root, {})
            if isinstance(space[root], dict):
                space[root][rest] = entry
        else:
            space[path] = entry
    return space


SPACES = spaces()


# --- the pass, in process ----------------------------------------------------------------------------

_COMPOSED: Dict[Tuple[str, Tuple[str, ...]], Any] = {}


def composed(config_name: str, groups: Tuple[str, ...]) -> Any:
    """The real config of these groups (cached: composing is the slow part of an example)."""
    from hydra import compose, initialize_config_dir

    if (config_name, groups) not in _COMPOSED:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            space = ["search_space=tiny"] if config_name == "tune" else []  # fewer models to build per search
            _COMPOSED[config_name, groups] = compose(config_name, overrides=[*SHRINK, *space, *groups])
    return copy.deepcopy(_COMPOSED[config_name, groups])


def with_overrides(cfg: Any, overrides: List[str]) -> Any:
    """``cfg`` with key overrides applied by Hydra's own code, as ``compose`` applies them after the
    groups (calling it here saves composing every example; its errors are compose's)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(overrides), cfg)
    return cfg


def refused_in_one_line(run: Any) -> Any:
    """``run()``'s result; a refusal becomes the line the CLI prints, asserted to be one clear
    line; anything else (a traceback for the user) fails the test."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline import cli

    try:
        return run()
    except (HydraException, OmegaConfBaseException, PipelineError) as e:
        event(f"refused: {type(e).__name__}")
        line = cli._hydra_message(e)
        assert line.strip() and "\n" not in line, repr(line)
        if isinstance(e, PipelineError):
            assert "\n" not in str(e).strip(), repr(str(e))
        return e


def nothing_written(where: Path, before: set) -> None:
    assert set(where.rglob("*")) == before, sorted(map(str, set(where.rglob("*")) - before))


def check_accepted(cfg: Any, tune: bool, hp: Any) -> None:
    """What a valid config must be: every key a setting; a model builds; the seed seeds; the data
    settings give a length; a files dataset reads, or fails on the data (naming the file)."""
    import keras

    from pipeline import data, readers
    from pipeline.model import DataShape, build_model

    keys = TUNE_KEYS[str(cfg.tuner.name)] if tune else TRAIN_KEYS
    from omegaconf import OmegaConf

    found = set(_leaves(OmegaConf.to_container(cfg, resolve=False)))
    assert found <= set(keys), f"accepted keys that are not settings: {sorted(found - set(keys))}"
    build_model(cfg, DataShape(min(int(cfg.dataset.vocab_size), 1000), 2))  # the data's vocabulary is at most that
    keras.utils.set_random_seed(int(cfg.seed))
    assert data.sequence_length(cfg.dataset, ["a b c", "d e"]) >= 1
    if str(cfg.dataset.source) == "files" and cfg.dataset.path and not cfg.dataset.class_files:
        try:
            readers.read_file(cfg.dataset.path, cfg.dataset)
        except DataError as e:  # about the file's content, not a setting refused late
            assert Path(str(cfg.dataset.path)).name in str(e), str(e)
    if tune:
        draws_build(cfg, hp, ends=False)


def _leaves(node: Any, prefix: str = "") -> List[str]:
    """Every leaf key of a plain (unresolved) config; open mappings (class_files, search_space) as one."""
    out = []
    for key, value in node.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in ("dataset.class_files", "search_space"):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def draws_build(cfg: Any, hp: Any, draws: int = 2, ends: bool = True) -> None:
    """Every end Keras Tuner can draw (min, max, each value) and ``draws`` random draws of the
    whole space build a model: the space cannot send a trial into a value no model takes."""
    from pipeline.model import DataShape, build_model
    from pipeline.search_space import with_values

    shape = DataShape(min(int(cfg.dataset.vocab_size), 1000), 2)
    for param in hp.space if ends else []:
        values = list(getattr(param, "values", None) or [v for v in (getattr(param, "min_value", None), getattr(param, "max_value", None))
                                                         if v is not None] or [False, True])
        for value in values:
            build_model(with_values(cfg, {param.name: value}), shape)
    for seed in range(draws):
        values = {p.name: p.random_sample(seed) for p in hp.space}
        build_model(with_values(cfg, values), shape)


def _validate(cfg: Any) -> Any:
    from pipeline.validate import check

    return check(cfg)


def _a_small_csv(where: Path) -> None:
    (where / "x.csv").write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(10)))


def _keys_property(tmp_path: Path, tune: bool, groups: Tuple[str, ...], overrides: List[str], keys: List[str]) -> None:
    if not (tmp_path / "x.csv").exists():
        _a_small_csv(tmp_path)
    before = set(tmp_path.rglob("*"))
    cfg = refused_in_one_line(lambda: with_overrides(composed("tune" if tune else "config", groups), overrides))
    if not isinstance(cfg, Exception):
        result = refused_in_one_line(lambda: _validate(cfg))
        if isinstance(result, Exception):
            # the line names a key it was given (or its value), whatever refused it
            from pipeline import cli

            line = cli._hydra_message(result)
            given = [*keys, *(g.split("=")[0] for g in groups)]
            named = [k for k in given if k.split(".")[-1] in line] or [o for o in overrides if o.split("=", 1)[1].strip("'") in line]
            # an interpolation of an unset variable, met where another key uses the value: the variable
            named += [v for o in overrides for v in re.findall(r"oc\.env:([^,}]+)", o) if f"'{v}'" in line]
            assert named, (line, groups, overrides)
        else:
            event("accepted")
            check_accepted(cfg, tune, result)
    nothing_written(tmp_path, before)


@settings(max_examples=EXAMPLES["keys"], deadline=None, suppress_health_check=SLOW_OK)
@given(case=config_overrides(tune=False))
@example(case=((), ["+training.epochz=1"], ["training.epochz"]))  # once accepted and silently ignored
@example(case=((), ["training.optimizer='adamz'"], ["training.optimizer"]))  # once refused only after the store was created
@example(case=(("dataset=files",), ["dataset.delimiter=';;'", "dataset.path='x.csv'"], ["dataset.delimiter"]))
@example(case=((), ["model.embedding_dim=4294967296"], ["model.embedding_dim"]))  # once an out-of-memory traceback (found by -m stress)
@example(case=((), ["model.num_layers=4294967296"], ["model.num_layers"]))  # would build layers until memory ran out
@example(case=((), ["paths.mlruns_dir='${oc.env:PIPELINE_NO_SUCH_VARIABLE}'"], ["paths.mlruns_dir"]))  # met as tracking.uri
@example(case=((), ["dataset.encoding='\x00'"], ["dataset.encoding"]))  # codecs.lookup's ValueError, a traceback (found in CI's draw)
def test_any_value_of_any_train_key_is_valid_or_refused_in_one_line(tmp_path: Path, case) -> None:
    _keys_property(tmp_path, False, *case)


@settings(max_examples=EXAMPLES["keys"], deadline=None, suppress_health_check=SLOW_OK)
@given(case=config_overrides(tune=True))
@example(case=((), ["+tuner.max_trialz=3"], ["tuner.max_trialz"]))
@example(case=((), ["tuner.name=hyperband"], ["tuner.name"]))  # the name of a tuner its section is not
@example(case=((), ["tuner.final.ensemble.seeds=[[1]]"], ["tuner.final.ensemble.seeds"]))  # a TypeError (OmegaConf lets it in)
@example(case=((), ["tuner.final.seed_variance.seeds=[[1],[2]]"], ["tuner.final.seed_variance.seeds"]))
@example(case=((), ["paths.tuner_dir='\t'"], ["paths.tuner_dir"]))  # the line named tuner.directory only (found in a fresh clone's draw)
def test_any_value_of_any_tune_key_is_valid_or_refused_in_one_line(tmp_path: Path, case) -> None:
    _keys_property(tmp_path, True, *case)


def _space_property(tmp_path: Path, space: Dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    before = set(tmp_path.rglob("*"))
    cfg = composed("tune", ())

    def assign() -> Any:
        cfg.search_space = OmegaConf.create(space)  # validated by the schema's Dict[str, Dict[str, Any]], as an override is
        return cfg

    if not isinstance(refused_in_one_line(assign), Exception):
        hp = refused_in_one_line(lambda: _validate(cfg))
        if isinstance(hp, ConfigError):
            assert str(hp).startswith(("search_space", "the search space is empty")), str(hp)
        elif not isinstance(hp, Exception):
            event("accepted")
            names = [p.name for p in hp.space]
            assert names and len(names) == len(set(names))
            draws_build(cfg, hp)
    nothing_written(tmp_path, before)


@settings(max_examples=EXAMPLES["space"], deadline=None, suppress_health_check=SLOW_OK)
@given(space=SPACES)
@example(space={"model.units": {"type": "int", "min": 0, "max": 16}})  # once a FAILED parent and a stuck tuner project
@example(space={"model.dropout": {"type": "choice", "values": 5}})  # once a traceback
@example(space={"model.dropout": {"type": "choice", "values": [0, 0.5]}})  # ints and floats for a float: valid
@example(space={"training.learning_rate": {"type": "float", "min": 0.001, "max": 0.1, "step": 0.01, "sampling": "log"}})
def test_any_search_space_is_valid_and_builds_at_every_end_or_is_refused_in_one_line(tmp_path: Path, space) -> None:
    _space_property(tmp_path, space)


@pytest.mark.stress
@settings(max_examples=EXAMPLES["keys"] * STRESS, deadline=None, suppress_health_check=SLOW_OK)
@given(case=st.booleans().flatmap(lambda tune: st.tuples(st.just(tune), config_overrides(tune=tune))))
def test_stress_any_value_of_any_key(tmp_path: Path, case) -> None:
    tune, rest = case
    _keys_property(tmp_path, tune, *rest)


@pytest.mark.stress
@settings(max_examples=EXAMPLES["space"] * STRESS, deadline=None, suppress_health_check=SLOW_OK)
@given(space=SPACES)
def test_stress_any_search_space(tmp_path: Path, space) -> None:
    _space_property(tmp_path, space)


def test_the_generators_reach_every_key_of_both_schemas() -> None:
    """Derived from the schemas: a key added to a dataclass is generated without a change here."""
    every = set(TRAIN_KEYS) | {k for keys in TUNE_KEYS.values() for k in keys}
    assert {"training.optimizer", "model.pooling", "tuner.on_change", "tuner.max_epochs", "tuner.num_initial_points",
            "dataset.delimiter", "baseline.C", "tuner.final.ensemble.seeds", "tuner.cv_auto.below"} <= every
    assert len(TRAIN_KEYS) >= 60 and all(values_for(kind) is not None for keys in (TRAIN_KEYS, *TUNE_KEYS.values()) for kind in keys.values())


# --- through the CLI: one line, and nothing left in the directory -----------------------------------

CLI_CASES = [
    ("more folds than a class has texts", ["tune", "tuner.cv_folds=500"], "tuner.cv_folds=500 is more folds than class"),
    ("a width that reaches 0", ["tune", "search_space.model.units.min=0"], "search_space.model.units: 0 cannot be trained: model.units must be at least 1"),
    ("files with no path", ["train", "dataset=files"], "dataset=files needs dataset.path"),
    ("a misspelled key added with +", ["train", "+training.epochz=1"], "training.epochz is not a setting; did you mean training.epochs?"),
    ("an unknown optimizer", ["train", "training.optimizer=adamz"], "Invalid value 'adamz'"),
    ("a percentile over 100", ["train", "dataset.length_percentile=150"], "dataset.length_percentile must be above 0 and at most 100"),
    ("an unterminated quote", ["train", 'tracking.run_name="my run'], "unterminated quote at column 19"),
    ("a model name TensorFlow refuses", ["train", "model.name='my model'"], "model.name may hold only letters, digits"),
    ("a registered name MLflow refuses", ["tune", "tuner.final.registered_model_name=team/lstm"], "registered_model_name must be a name without '/'"),
    ("a bad job in a sweep", ["train", "-m", "seed=1,2", "training.epochs=0"], "training.epochs must be at least 1, got 0 (job "),
    # a glob() over a group's options: the whole check was skipped (Hydra's "ConfigLoader is not set", a warning)
    ("a bad job of a glob sweep", ["train", "-m", "model=glob(*lstm)", "model.units=0"], "model.units must be at least 1, got 0 (job +debug=fast dataset.max_samples=100 model=bilstm"),
    ("a glob that matches nothing", ["train", "-m", "model=glob(*gru)"], "model=glob(*gru) matches no option of the config group model (bilstm, lstm"),
    ("the end of a range, which Optuna draws", ["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=2", "training.verbose=range(1,3)"],
     "training.verbose must be between 0 and 2, got 3 (job "),  # once checked as Python's range, without its end (a helper's hunt)
    ("a value an Optuna sweep can draw", ["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=2", "training.epochs=choice(2,0)"],
     "training.epochs must be at least 1, got 0 (job "),  # once checked by the job, after the sweep's parent opened
    ("an interval an Optuna sweep draws floats from", ["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "model.units=interval(8,64)"],
     "model.units"),
    # Optuna (and Nevergrad) minimise by default: the sweep minimised validation accuracy, silently
    ("an Optuna sweep that would minimise the accuracy", ["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2"],
     "the sweeper would minimize (its default) val_accuracy, which each job returns and where higher is better: "
     "add hydra.sweeper.direction=maximize"),
    ("an Optuna search sweep that would maximise a loss", ["tune", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                                                           "tuner.objective=val_loss"],
     "the sweeper would maximize val_loss, which each job returns and where lower is better: add hydra.sweeper.direction=minimize"),
    # the dataset's name read class_files before its shape was checked: OmegaConf's TypeError (a helper's review)
    ("class files given as one file", ["train", "dataset=files", "dataset.format=lines", "dataset.class_files=pos.txt"],
     "dataset.class_files must be {label: file, ...}"),
    ("class files as the README writes them", ["train", "dataset=files", "dataset.format=lines", "dataset.class_files={pos: a.txt, neg: b.txt}"],
     "data file not found: a.txt (dataset.class_files.pos)"),  # once a traceback from OmegaConf (found by -m stress)
]


@pytest.mark.no_store  # the directory starts empty: nothing may appear in it
@pytest.mark.parametrize("name, args, fragment", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_bad_setting_leaves_the_directory_as_it_was(tmp_path: Path, name: str, args: List[str], fragment: str) -> None:
    """No store, no tuner project, not even Hydra's outputs/ (a sweep: no parent run, no multirun/):
    refused before any of them."""
    flags, overrides = [a for a in args[1:] if a.startswith("-")], [a for a in args[1:] if not a.startswith("-")]
    result = run_cli([args[0], *flags, *SHRINK, "dataset.max_samples=100", *overrides], cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


GOOD_VECTORS = "film 0.1 0.2 0.3\ngood 0.3 0.2 0.1\n"


@pytest.mark.no_store
@pytest.mark.parametrize("command, args, lines, fragment", [
    ("train", [], GOOD_VECTORS, "pretrained vectors have 3 dimensions but model.embedding_dim=8; set model.embedding_dim=3"),
    ("tune", ["model.embedding_dim=3"], GOOD_VECTORS, "search_space.model.embedding_dim: the vectors in model.pretrained.path fix "
                                                      "it at 3; leave it out of the search (~search_space.model.embedding_dim)"),
    ("train", ["model.pretrained.format=word2vec", "model.embedding_dim=3"], GOOD_VECTORS, "the first line is not a word2vec header"),
    ("train", ["model.embedding_dim=3"], GOOD_VECTORS + "plot 0.5 0.5\n", "line 3: 2 values, expected 3"),
    ("tune", ["model.embedding_dim=3", "~search_space.model.embedding_dim"], GOOD_VECTORS + "plot 0.5 x 0.5\n",
     "line 3: not a word followed by numbers"),
], ids=["train-size", "tune-searched-size", "not-word2vec", "a-short-line-far-down", "not-a-number-far-down"])
def test_vectors_of_another_size_or_a_bad_line_are_refused_before_anything(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, command: str, args: List[str], lines: str, fragment: str) -> None:
    """The file's size is read from its first line with the settings, and every line is read with
    the data: once found by the model build or the embedding's load, after the store and outputs/
    existed (a search: by its first trial, its parent run left FAILED)."""
    vectors = tmp_path_factory.mktemp("vectors") / "glove.txt"
    vectors.write_text(lines, encoding="utf-8")
    result = run_cli([command, *SHRINK, "dataset.max_samples=100", f"model.pretrained.path={vectors}", *args], cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.no_store
def test_a_validation_file_the_test_file_empties_leaves_the_directory_as_it_was(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Found by a helper's hunt: a traceback, exit 1, after the store and outputs/ were made."""
    folder = tmp_path_factory.mktemp("data")
    train = write_sentiment_csv(folder / "train.csv", n=60)
    (folder / "held.csv").write_text("text,label\na fine film,pos\na dull film,neg\n", encoding="utf-8")
    result = run_cli(["train", *SHRINK, "dataset=files", f"dataset.path={train}", f"dataset.val_path={folder / 'held.csv'}",
                      f"dataset.test_path={folder / 'held.csv'}"], cwd=tmp_path)
    assert_one_line_error(result, "no texts left for validation")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.no_store
@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_bad_data_file_leaves_the_directory_as_it_was(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, command: str) -> None:
    """The data is read in the same pass as the settings, before Hydra's outputs/ (and before
    TensorFlow's import, the search space's models): a search used to make outputs/ first."""
    one_class = tmp_path_factory.mktemp("data") / "one_class.csv"
    one_class.write_text("text,label\ngood film,pos\nfine film,pos\nbad film,pos\n", encoding="utf-8")
    result = run_cli([command, "dataset=files", f"dataset.path={one_class}"], cwd=tmp_path)
    assert_one_line_error(result, "only one class ('pos') in the training data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.no_store
def test_hydra_flags_stand_anywhere_and_a_wrong_one_is_one_line(tmp_path: Path) -> None:
    """`-m` after the overrides is a multirun (argparse refused it with its usage text); an option
    Hydra does not have, or two modes at once, are one line (were argparse's usage, and a traceback)."""
    assert_one_line_error(run_cli(["train", *SHRINK, "seed=1,2", "-m", "training.epochs=0"], cwd=tmp_path),
                          "training.epochs must be at least 1, got 0 (job +debug=fast seed=1 ")
    assert_one_line_error(run_cli(["train", "--multirn"], cwd=tmp_path), "pipeline train has no option '--multirn'; did you mean --multirun?")
    assert_one_line_error(run_cli(["tune", "--cfg", "job", "-m"], cwd=tmp_path), "pipeline tune takes one of --run, --multirun, --cfg")
    assert list(tmp_path.iterdir()) == []


def test_a_misspelled_key_is_not_told_to_add_itself_with_plus(tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli(["train", "training.epochz=1"], cwd=tmp_path), "did you mean training.epochs?")
    assert "+training.epochz" not in line


def test_a_sweeper_is_told_which_way_the_objective_goes() -> None:
    """Optuna's ``direction`` and Nevergrad's ``optim.maximize`` against what a job returns (unit:
    the sweeper's config alone, as Hydra gives it to the callback)."""
    from pipeline.validate import sweeper_direction

    def config(sweeper: dict, objective: str = "val_accuracy", tune: bool = False) -> DictConfig:
        job = {"training": {"objective": "val_accuracy"}, "tuner": {"objective": objective}} if tune else {"training": {"objective": objective}}
        return OmegaConf.create({"hydra": {"sweeper": sweeper}, **job})

    sweeper_direction(config({"direction": "maximize"}))
    sweeper_direction(config({"direction": "minimize"}, "val_loss"))
    sweeper_direction(config({"direction": ["maximize", "minimize"]}))  # multi-objective: not this check's
    sweeper_direction(config({"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}))
    sweeper_direction(config({"optim": {"maximize": True}}))
    for sweeper, objective, tune, fix in [({"direction": "Direction.minimize"}, "val_accuracy", False, "hydra.sweeper.direction=maximize"),
                                          ({"direction": "minimize"}, "val_auc", True, "hydra.sweeper.direction=maximize"),
                                          ({"direction": "maximize"}, "val_loss", True, "hydra.sweeper.direction=minimize"),
                                          ({"optim": {"maximize": False}}, "val_accuracy", False, "hydra.sweeper.optim.maximize=true")]:
        with pytest.raises(ConfigError, match=f"add {fix}$"):
            sweeper_direction(config(sweeper, objective, tune))


@pytest.mark.no_store
def test_a_sweep_over_a_bad_data_file_leaves_the_directory_as_it_was(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each job read its own data, after the sweep's parent run opened: a bad file in the second
    job left the parent FAILED, the first job's run and multirun/ behind. Every distinct dataset of
    the sweep is read in the pass before anything is made."""
    folder = tmp_path_factory.mktemp("data")
    good = write_sentiment_csv(folder / "good.csv", n=60)
    (folder / "bad.csv").write_text("text,label\n", encoding="utf-8")
    result = run_cli(["train", "-m", *SHRINK, "dataset=files", f"dataset.path={good},{folder / 'bad.csv'}", "seed=1,2"], cwd=tmp_path)
    assert_one_line_error(result, "bad.csv: no labelled texts found (job ")
    assert list(tmp_path.iterdir()) == []
    # and a search's folds, which need as many texts in each class
    result = run_cli(["tune", "-m", *SHRINK, "dataset=files", f"dataset.path={good}", "tuner.cv_folds=2,500"], cwd=tmp_path)
    assert_one_line_error(result, "tuner.cv_folds=500 is more folds than class")
    assert list(tmp_path.iterdir()) == []
