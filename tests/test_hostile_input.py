"""Hostile input, generated (hypothesis): every file and every config value either works or
ends in one clear line; never a traceback, never a RUNNING run, never a file outside the
configured directories."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import List

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import SHRINK, assert_one_line_error, run_cli
from pipeline import data, readers
from pipeline.config import CONF_DIR
from pipeline.errors import PipelineError

SUFFIXES = [".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".txt"]
#: What a hostile file is made of: NULs, BOMs, CR/LF mixes, quotes, delimiters, long runs, digits
#: that only look like ASCII ones, numbers past Python's 4,300 digits, JSON nested past its stack,
#: and UTF-7's way of writing a lone surrogate.
PIECES = st.sampled_from(
    ["\x00", "\ufeff", "\r\n", "\n", "\r", ",", "\t", '"', "'", "{", "}", ":", "text", "label", "a", "b", "1", "2",
     " ", "é", "\u2028", "\x85", "x" * 5000, '{"text": "t", "label": 1}', "pos good film", "neg bad film",
     "-", "--1", "²", "٣", "9" * 5000, "[" * 5000, '{"text": "t", "label": ' + "9" * 5000 + "}", "+2D8-"]
)
CONTENT = st.one_of(
    st.binary(max_size=2000),
    st.lists(PIECES, max_size=60).map(lambda parts: "".join(parts).encode("utf-8")),
)
#: Column specs as a user may write them: names, indexes, and what only looks like an index.
COLUMNS = st.one_of(st.sampled_from(["text", "label", "0", "1", "2", "-1", "--0", "²", "٣", "9" * 30, "9" * 5000]), st.text(max_size=8))


def _ds(**kw):
    base = dict(format="auto", text_column="text", label_column="label", header=None, delimiter=None, encoding="utf-8")
    return SimpleNamespace(**{**base, **kw})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=CONTENT, suffix=st.sampled_from(SUFFIXES), encoding=st.sampled_from(["utf-8", "latin-1", "utf-7", "utf-16"]),
       delimiter=st.sampled_from([None, ",", "\t", ";", "|"]), columns=st.tuples(COLUMNS, COLUMNS),
       header=st.sampled_from([None, True, False]))
@example(content=b"text,label\ngood,1\nbad,--1\n", suffix=".csv", encoding="utf-8", delimiter=None, columns=("text", "label"), header=None)
@example(content=b"a,b\ngood,1\n", suffix=".csv", encoding="utf-8", delimiter=None, columns=("--0", "1"), header=False)
@example(content=b"[" * 5000, suffix=".jsonl", encoding="utf-8", delimiter=None, columns=("text", "label"), header=None)
@example(content=b"text,label\n+2D8-,pos\n", suffix=".csv", encoding="utf-7", delimiter=None, columns=("text", "label"), header=None)
def test_any_bytes_are_read_as_texts_and_labels_or_refused_in_one_line(content: bytes, suffix: str, encoding: str, delimiter, columns,
                                                                       header) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(content)
        try:
            ds = _ds(encoding=encoding, delimiter=delimiter, text_column=columns[0], label_column=columns[1], header=header)
            texts, labels = readers.read_file(path, ds)
            classes = data._sort_classes(labels)
        except PipelineError as e:
            assert str(e).strip() and "\n" not in str(e).strip()
            return
    assert texts and len(texts) == len(labels) and sorted(classes) == sorted(set(labels))
    assert all(isinstance(t, str) for t in texts) and all(isinstance(label, str) and label.strip() for label in labels)
    # text a later step can write: hashed, vectorised and logged as UTF-8
    assert all(t.encode("utf-8") is not None for t in texts) and all(label.encode("utf-8") for label in labels)


def test_an_old_mac_s_line_ends_split_rows_in_every_format(tmp_path: Path) -> None:
    """A lone carriage return ends a row in a label-and-text file and a JSON-lines file, as it does
    in a CSV file (where it did; the others read the whole file as one example)."""
    files = {"data.txt": "pos good film\rneg bad film\rpos fine film\r",
             "data.jsonl": '{"text": "good film", "label": "pos"}\r{"text": "bad film", "label": "neg"}\r',
             "data.csv": "text,label\rgood film,pos\rbad film,neg\r"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content.encode())
        texts, labels = readers.read_file(tmp_path / name, _ds())
        assert texts[:2] == ["good film", "bad film"] and labels[:2] == ["pos", "neg"], name


ROW_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\x00", "good film", "bad film", "x" * 3000]))
ROW_LABEL = st.one_of(st.sampled_from(["pos", "neg", "1", "0", "1.0", " ", "", "NaN", "--1", "+1", "²", "٣", "9" * 5000]),
                      st.integers(-3, 3).map(str), st.text(max_size=12))


def _csv(rows: List[tuple]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def _files_dataset() -> dict:
    """The ``dataset=files`` section as the tests compose it (composed once: a quarter of a second each)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*SHRINK, "dataset=files", "dataset.path=x.csv"])
    return OmegaConf.to_container(cfg.dataset, resolve=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(train=st.lists(st.tuples(ROW_TEXT, ROW_LABEL), min_size=1, max_size=30),
       test=st.one_of(st.none(), st.lists(st.tuples(ROW_TEXT, ROW_LABEL), min_size=1, max_size=8)),
       bom=st.booleans())
@example(train=[(f"good film {i}", "1") for i in range(10)] + [(f"bad film {i}", "--1") for i in range(10)], test=None, bom=False)
def test_train_and_test_files_split_or_are_refused_in_one_line(train, test, bom: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        train_path = Path(tmp) / "train.csv"
        train_path.write_text(("\ufeff" if bom else "") + _csv(train), encoding="utf-8")
        ds = {**_files_dataset(), "path": str(train_path), "test_path": None}
        if test is not None:
            test_path = Path(tmp) / "test.csv"
            test_path.write_text(_csv(test), encoding="utf-8")
            ds["test_path"] = str(test_path)
        try:
            splits = data.load_splits(SimpleNamespace(**ds), seed=0)
        except PipelineError as e:
            assert str(e).strip() and "\n" not in str(e).strip()
            return
    # what is split is usable: two classes, no text in two splits, no unseen test label
    assert len(splits.classes) >= 2
    assert not set(splits.train.texts) & set(splits.test.texts)
    assert set(splits.test.labels) <= set(splits.classes) and set(splits.val.labels) <= set(splits.classes)


NUMBERS = st.one_of(st.integers(-3, 4), st.sampled_from([0.0, -0.5, 0.5, 1.0, 1.5, 1e9, -1e-9]), st.integers(), st.floats(),
                    st.sampled_from(["nan", "abc", "inf", "-inf", "1e400", "²", "٣", "--2", "null", "~", "''"]))
KEYS = ["training.epochs", "training.batch_size", "training.learning_rate", "model.units", "model.embedding_dim",
        "model.dropout", "model.recurrent_dropout", "model.num_layers", "dataset.val_size", "dataset.test_size",
        "dataset.vocab_size", "dataset.max_samples", "dataset.sequence_length", "tuner.max_trials", "tuner.executions_per_trial",
        "tuner.cv_folds", "tuner.cv_auto.folds", "tuner.cv_auto.below",
        # enums: refused when the config is composed
        "model.pooling", "training.class_weight", "training.early_stopping.monitor", "tuner.objective", "tuner.direction",
        "tuner.on_change", "training.fit_on"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(KEYS), NUMBERS, min_size=1, max_size=3))
@example(values={"training.batch_size": 0})  # once refused only after its run was opened (a FAILED run)
@example(values={"tuner.cv_folds": "--2", "dataset.sequence_length": "²"})  # str.isdigit's digits: int() refused them, a traceback
def test_any_config_value_trains_or_is_refused_in_one_line(tmp_path: Path, values: dict) -> None:
    """The train job in process, on a small CSV: it trains, or stops with one line and no RUNNING run."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from conftest import write_sentiment_csv
    from pipeline import cli, train
    from pipeline.config import compose_train
    from pipeline.tuning.tuners import validate

    csv_path = tmp_path / "reviews.csv"
    if not csv_path.exists():
        write_sentiment_csv(csv_path, n=80)
    store = tmp_path / "mlruns"
    overrides = [*SHRINK, "dataset=files", f"dataset.path={csv_path}", f"paths.mlruns_dir={store}", "tracking.log_model=false"]
    tuner_values = {k: v for k, v in values.items() if k.startswith("tuner.")}
    train_values = {k: v for k, v in values.items() if not k.startswith("tuner.")}
    try:
        validate(compose_train([*overrides, *(f"{k}={v}" for k, v in tuner_values.items())], config_name="tune"))
        train.run(compose_train([*overrides, *(f"{k}={v}" for k, v in train_values.items())]))
    except HydraException as e:
        assert "\n" not in cli._hydra_message(e)
    except (PipelineError, OmegaConfBaseException) as e:
        assert cli.first_line(e).strip() and "\n" not in str(e).strip()
    if (store / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)
        assert not [r for r in runs if r.info.status == "FAILED"], [r.data.tags.get("error") for r in runs]


HOSTILE = {
    "nul bytes": b"text,label\ngood\x00 film,pos\nbad film,neg\n" * 30,
    "a 10^6-character text": ("text,label\n" + "".join(f"{'great ' * 10} {i},pos\nawful {i},neg\n" for i in range(60))
                              + f"{'word ' * 200_000},pos\n").encode(),
    "windows line endings and a BOM": ("\ufefftext,label\r\n" + "".join(f"good {i},pos\r\nbad {i},neg\r\n" for i in range(60))).encode(),
    "wrong delimiter": ("text;label\n" + "".join(f"good {i};pos\n" for i in range(60))).encode(),
    "mixed label types": ("text,label\n" + "".join(f"good {i},1\nbad {i},neg\nok {i},1.0\n" for i in range(40))).encode(),
    "one row": b"text,label\ngood film,pos\n",
    "empty texts": ("text,label\n" + "".join(f",pos\n{'' if i % 2 else 'bad'} {i},neg\n" for i in range(60))).encode(),
    "random bytes": bytes(range(256)) * 20,
}


#: With -m stress, to keep the default suite within 15 minutes: a CLI train each, and what they
#: hold (delimiters, label types, row counts, empty texts) is read by the generated files above.
READ_ABOVE = {"wrong delimiter", "mixed label types", "one row", "empty texts"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.stress) if n in READ_ABOVE else n for n in HOSTILE])
def test_hostile_files_train_or_fail_in_one_line_through_the_cli(tmp_path: Path, name: str) -> None:
    (tmp_path / "data.csv").write_bytes(HOSTILE[name])
    result = run_cli(["train", *SHRINK, "dataset=files", "dataset.path=data.csv", "tracking.log_model=false"], cwd=tmp_path)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    if result.returncode != 0:
        assert_one_line_error(result)
    runs = []
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == (result.returncode == 0)


@pytest.mark.no_store  # checks everything the test directory holds
def test_overrides_cannot_put_outputs_outside_the_configured_directories(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    small = [*SHRINK, "dataset.max_samples=200"]
    for args, fragment in (
        (["tune", *small, "dataset.name=../../escaped", "tuner.max_trials=1"], "tuner.project_name"),
        (["tune", *small, "tuner.project_name=/tmp/escaped", "tuner.max_trials=1"], "tuner.project_name"),
    ):
        assert_one_line_error(run_cli(args, cwd=work), fragment)
    trained = run_cli(["train", *small, "tracking.experiment_name=../../escaped"], cwd=work)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["work"]
    assert {p.name for p in work.iterdir()} <= {"mlruns", "outputs"}
    escaped = [p for p in work.rglob("*escaped*")]
    assert escaped and all((work / "mlruns" / "artifacts") in p.parents for p in escaped)
    assert not list(Path("/tmp").glob("escaped*"))


def test_words_holding_line_boundaries_train_into_a_model_that_loads_and_predicts(make_cfg, tmp_path: Path, store_uri: str) -> None:
    """MR's latin-1 reviews hold \\x85 (NEL) inside words; so may any corpus \\u2028 or \\x1c. The run's
    end-to-end model must load and read those words as training did (Keras splits a saved
    vocabulary at them: the MR search ended in a traceback after all its trials)."""
    import pandas as pd

    from pipeline import tracking, train

    words = ["and\x85of", "film\u2028here", "x\x1cy", "par\u2029a", "gs\x1dend"]
    rows = [(f"{w} great good {i}", "pos") for i, w in enumerate(words * 8)] + [(f"{w} bad awful {i}", "neg") for i, w in enumerate(words * 8)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "reviews.csv", index=False, encoding="utf-8")
    train.run(make_cfg("dataset=files", f"dataset.path={tmp_path / 'reviews.csv'}", "dataset.strip_punctuation=false",
                       "training.epochs=1", "tracking.log_model=true"))
    (run,) = MlflowClient(store_uri).search_runs([e.experiment_id for e in MlflowClient(store_uri).search_experiments()])
    assert run.info.status == "FINISHED"
    model = tracking.load_text_model(store_uri, run.info.run_id)
    predicted = model.predict(pd.DataFrame({"text": ["and\x85of great good", "film\u2028here bad awful"]}))
    assert len(predicted) == 2 and set(predicted["label"]) <= {"pos", "neg"}
    # the vocabulary artifact, one token per "\n" as the README says: every such word whole
    import mlflow

    vocabulary = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data/vocabulary.txt").split("\n")
    assert set(words) <= set(vocabulary)


#: What matplotlib reads as markup in a label: TeX maths between dollars, its escapes and groups.
LABEL_PIECES = st.sampled_from(["$", "$$", "\\", "\\$", "^", "_", "{", "}", "%", "#", "&", "~", "\\frac", "a", "é", " ", "\n"])
LABELS = st.one_of(st.text(max_size=12), st.lists(LABEL_PIECES, min_size=1, max_size=8).map("".join))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=st.lists(LABELS, min_size=1, max_size=3, unique=True))
@example(labels=["$^$", "neg"])  # a class named $^$: the run FAILED drawing its confusion matrix (a helper's hunt)
@example(labels=["cost $5 vs $^$"])  # a run's name: every `pipeline compare` of its experiment failed
def test_any_class_or_run_name_is_drawn_as_written(labels: List[str]) -> None:
    """A label is data: whatever its characters, the confusion matrix and the comparison are drawn,
    and show the name as it is written (matplotlib reads ``$...$`` as TeX maths, and fails on bad maths)."""
    import io
    import warnings

    import matplotlib.pyplot as plt
    import numpy as np

    from pipeline.evaluate import plot_comparison, plot_confusion_matrix

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a glyph the font lacks
        for figure in (plot_confusion_matrix(np.ones((len(labels), len(labels)), dtype=int), labels),
                       plot_comparison(labels, [0.5] * len(labels), "val_accuracy")):
            figure.savefig(io.BytesIO(), format="png")
            ticks = figure.axes[0].get_yticklabels()  # the names (a colorbar's ticks are the other axes')
            shown = [t.get_text() for t in ticks]
            drawn = [t._preprocess_math(t.get_text()) for t in ticks]  # the text matplotlib draws, and whether as maths
            plt.close(figure)
            assert shown and all(not math for _, math in drawn), shown  # none of them read as maths
            assert sorted(text for text, _ in drawn) == sorted(labels), drawn  # each as written


def test_a_class_named_in_tex_maths_trains_and_is_drawn(make_cfg, tmp_path: Path, store_uri: str) -> None:
    import pandas as pd

    from pipeline import train

    rows = [(f"good film {i}", "$^$") for i in range(40)] + [(f"bad film {i}", "neg") for i in range(40)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "d.csv", index=False)
    train.run(make_cfg("dataset=files", f"dataset.path={tmp_path / 'd.csv'}", "training.epochs=1"))
    client = MlflowClient(store_uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert any(a.path.endswith("confusion_matrix.png") for a in client.list_artifacts(run.info.run_id, "plots"))


def test_drawing_leaves_the_caller_s_matplotlib_backend_as_it_was(tmp_path: Path) -> None:
    """A notebook (or any program) that calls the pipeline's plots keeps its own backend: they set
    Agg for the whole process before (``matplotlib.use``)."""
    import subprocess
    import sys

    script = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import numpy as np\n"
        "from pipeline.evaluate import plot_comparison, plot_confusion_matrix, plot_learning_curves\n"
        "figures = [plot_confusion_matrix(np.eye(2, dtype=int), ['a', 'b']), plot_comparison(['x'], [0.5], 'm'),\n"
        "           plot_learning_curves({'loss': [1.0, 0.5], 'val_loss': [1.1, 0.7]})]\n"
        f"[f.savefig({str(tmp_path)!r} + f'/{{i}}.png') for i, f in enumerate(figures)]\n"
        "print(matplotlib.get_backend())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().lower() == "svg"
    assert all((tmp_path / f"{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for i in range(3))  # drawn all the same
