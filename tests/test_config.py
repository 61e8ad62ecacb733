"""Configuration: every group option composes, typed; every path absolute."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException

from pipeline.config import CONF_DIR, to_container

GROUPS = {
    group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for group in ("dataset", "model", "training", "tracking", "paths")
}
#: Every option of every group of the tune job, the optional groups (added with +) included.
TUNE_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(CONF_DIR.iterdir()) if group.is_dir() and group.name != "hydra"
    for option in sorted(group.glob("*.yaml"))
]
OPTIONAL = ("experiment", "debug")


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_defaults_are_the_tutorial_model_on_bbc_news() -> None:
    cfg = _compose()
    assert cfg.dataset.name == "bbc_news" and cfg.model.name == "lstm"
    assert (cfg.model.embedding_dim, cfg.model.units, cfg.model.num_layers) == (128, 128, 1)
    assert cfg.training.deterministic is True and cfg.seed == 42
    assert cfg.tracking.uri == f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "dataset" and option == "files":
        overrides.append("dataset.path=x.csv")
    resolved = to_container(_compose(*overrides))
    if group in ("dataset", "model"):
        assert resolved[group]["name"] == ("files-x" if option == "files" else option)
    for key, value in resolved["paths"].items():
        assert Path(value).is_absolute(), key


def test_the_tune_job_lists_every_group() -> None:
    assert {g for g, _ in TUNE_OPTIONS} == {*GROUPS, "tuner", "search_space", *OPTIONAL}


@pytest.mark.parametrize("group, option", TUNE_OPTIONS, ids=[f"{g}={o}" for g, o in TUNE_OPTIONS])
def test_every_option_of_every_group_composes_into_a_search_that_validates(group: str, option: str) -> None:
    """Each option (presets and debug included) composes into the tune job, resolves whole, and
    passes the checks a search makes before it reads any data (its search space compiles)."""
    from pipeline.tuning.tuners import validate

    overrides = [f"+{group}={option}" if group in OPTIONAL else f"{group}={option}"]
    if group == "dataset" and option == "files":
        overrides.append("dataset.path=x.csv")
        Path("x.csv").write_text("text,label\n")  # the file must be there (read only by a run)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("tune", overrides=overrides)
    resolved = to_container(cfg)
    if group in ("dataset", "model", "tuner"):
        assert resolved[group]["name"] == ("files-x" if option == "files" else option)
    hp = validate(cfg)
    assert [p.name for p in hp.space], "an empty search space"
    assert all(p.name.split(".")[0] in ("model", "training") for p in hp.space)


def test_misspelled_key_wrong_type_and_unknown_option_fail_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException, match="training.epoch"):
        _compose("training.epoch=3")
    with pytest.raises(ConfigCompositionException, match="training.batch_size"):
        _compose("training.batch_size=big")
    with pytest.raises(MissingConfigException, match="dataset/nope"):
        _compose("dataset=nope")


def test_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    cfg = _compose("dataset=sst2")
    assert cfg.dataset.path == str(tmp_path / "sst2" / "stsa.binary.train")


def test_searches_on_different_files_or_columns_get_their_own_project_and_model_name() -> None:
    """Two `pipeline tune dataset=files` searches on different files shared one tuner project (the
    second was refused) and one registered model; the file's stem, its extension where it is not
    .csv, the columns where they are not the defaults, and a class_files dataset's file names now
    tell them apart."""
    def names(*overrides: str) -> tuple:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            resolved = to_container(compose("tune", overrides=["dataset=files", *overrides]))
        return resolved["dataset"]["name"], resolved["tuner"]["project_name"], resolved["tuner"]["final"]["registered_model_name"]

    assert names("dataset.path=/data/reviews.csv") == ("files-reviews", "files-reviews-lstm-seed42", "lstm-files-reviews")
    assert names("dataset.path=/data/spam.csv")[1] == "files-spam-lstm-seed42"
    assert names("dataset.path=/data/reviews.csv", "dataset.text_column=body", "dataset.label_column=stars")[0] == "files-reviews-body-stars"
    # a name that is safe as a folder and a registered model name, whatever the file is called
    assert names("dataset.path='/data/my reviews (v2)/../x y.tsv'")[0] == "files-x_y-tsv"
    # the same stem in another format, and datasets of one file per class, were one project
    assert names("dataset.path=/data/reviews.jsonl") == ("files-reviews-jsonl", "files-reviews-jsonl-lstm-seed42", "lstm-files-reviews-jsonl")
    assert names("dataset.class_files={pos: /d/rt.pos, neg: /d/rt.neg}")[0] == "files-rt.neg-rt.pos"
    assert names("dataset.class_files={pos: /d/a.txt, neg: /d/b.txt}")[0] == "files-b.txt-a.txt"
    assert names("dataset.path=/data/Reviews.TSV")[0] == "files-Reviews-tsv"  # the extension as the format reads it
    assert names("dataset.path=/data/reviews.csv", "dataset.name=mine")[0] == "mine"
    # the given datasets keep their names
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert compose("tune", overrides=["dataset=mr"]).dataset.name == "mr"
