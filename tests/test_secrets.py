"""Secrets never reach the store: of any length (1 to 40 characters of any printable kind), in any
URI form, in every field that reaches MLflow; checked on the scrubbing rule itself (hypothesis,
thousands of examples) and on whole real runs, by reading every row of every table of the SQLite
store and every file of the artifact tree (the files inside a saved Keras model too)."""

from __future__ import annotations

import json
import sqlite3
import string
import urllib.parse
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from conftest import SHRINK, SPACE, run_cli, runs_in, write_sentiment_csv
from pipeline.redact import MARK, SECRET_NAME, WHOLE_LENGTH, redact, scrub, scrub_text, secrets_from_environment

# -- the oracle: what "the secret is there" means, written independently of pipeline/redact.py


def forms(secret: str) -> List[str]:
    """A secret as it can stand in a text: as typed, and percent-encoded."""
    q = urllib.parse
    return sorted({secret, q.quote(secret), q.quote(secret, safe=""), q.quote_plus(secret)})


def occurs(secret: str, text: str) -> bool:
    """Whether ``secret`` stands in ``text`` the way README promises it never does in the store:
    anywhere when it has 8 characters or more; a shorter one where no letter or digit is glued to
    it (on a side where it starts or ends with one)."""
    if len(secret) >= WHOLE_LENGTH:
        return secret in text
    start = text.find(secret)
    while start >= 0:
        end = start + len(secret)
        glued_left = start > 0 and text[start - 1].isalnum() and secret[0].isalnum()
        glued_right = end < len(text) and text[end].isalnum() and secret[-1].isalnum()
        if not glued_left and not glued_right:
            return True
        start = text.find(secret, start + 1)
    return False


def leaked(secret: str, text: str) -> bool:
    return any(occurs(form, text) for form in forms(secret))


# -- the rule itself, over the whole input space: hypothesis

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)  # letters, digits, space, every ASCII symbol
ANY_CHAR = st.one_of(PRINTABLE, st.characters(blacklist_categories=["Cs"]))  # and any other character
SECRETS = st.text(PRINTABLE, min_size=1, max_size=40) | st.text(ANY_CHAR, min_size=1, max_size=40)
FILLER = st.text(ANY_CHAR, max_size=12)
DELIMITER = st.text(st.sampled_from(string.punctuation + " \t\n"), min_size=1, max_size=3)


def uri_forms(secret: str) -> List[str]:
    """The secret in every URI form a config can carry: as the password (with a user, with an empty
    one, with an ``@`` in the user, an IPv6 host, a port), as a query or fragment parameter's value,
    percent-encoded as a URI carries it and raw."""
    enc = urllib.parse.quote(secret, safe="")
    return [
        f"https://user:{enc}@host.example/p", f"https://:{enc}@host.example/p", f"redis://:{enc}@127.0.0.1:6379/0",
        f"postgresql+psycopg2://me%40corp:{enc}@[::1]:5432/db?sslmode=require", f"http://u@corp:{enc}@h:5000",
        f"https://h.example/p?a=1&token={enc}&b=2", f"s3://bucket/k?X-Amz-Signature={enc}", f"https://h/#access_token={enc}&x=1",
        f"https://h/p?password={urllib.parse.quote_plus(secret)}", f"mysql://root:{secret}@db:3306/x",
    ]


@st.composite
def planted(draw) -> Tuple[Dict[str, str], str, List[str]]:
    """(environment, text, secrets): one to three secrets in variables named like secrets, planted in
    a text at delimited places, glued to filler where they are long, and in every URI form."""
    names = ["MY_SERVICE_TOKEN", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "GH_CREDENTIALS", "SSH_PRIVATE_KEY"]
    secrets = draw(st.lists(SECRETS, min_size=1, max_size=3))
    assume(all(s.strip("*") for s in secrets))  # a secret of stars only is the mark itself
    environ = dict(zip(draw(st.permutations(names)), secrets))
    environ.update(HOME="/root", TOKENIZERS_PARALLELISM="false")
    pieces = []
    for secret in secrets:
        form = draw(st.sampled_from(forms(secret)))
        pieces += [draw(DELIMITER), form, draw(DELIMITER)]
        if len(form) >= WHOLE_LENGTH:
            pieces += [draw(FILLER), form, draw(FILLER)]
        pieces += [" ", draw(st.sampled_from(uri_forms(secret))), " "]
    pieces = draw(st.permutations(pieces))
    return environ, draw(FILLER) + "".join(pieces) + draw(FILLER), secrets


def check_planted(case: Tuple[Dict[str, str], str, List[str]]) -> None:
    environ, text, secrets = case
    scrubbed = scrub_text(text, secrets_from_environment(environ))
    for secret in secrets:
        assert not leaked(secret, scrubbed), (secret, scrubbed)


#: Examples per property in the default suite (the stress variant draws twenty times more).
EXAMPLES = 500
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(planted())
@example(({"A_TOKEN": "a"}, "job-a a.txt banana (a) https://:a@h", ["a"]))
@example(({"A_TOKEN": "1"}, "epochs=1 lr=0.1 https://h?token=1", ["1"]))
@example(({"PW_PASSWORD": "-"}, "bbc_news-lstm-s42", ["-"]))
@example(({"X_SECRET": ".*"}, "x.* .*y (.*)", [".*"]))
@example(({"X_SECRET": "*x", "Y_TOKEN": "y"}, "y-x a*x", ["*x", "y"]))  # a mark and its neighbour make no secret
@example(({"X_SECRET": "p@ss:w/rd%"}, "redis://u:p%40ss%3Aw%2Frd%25@h p@ss:w/rd%", ["p@ss:w/rd%"]))
def test_no_planted_secret_of_any_length_or_form_survives_scrubbing(case) -> None:
    check_planted(case)


@pytest.mark.stress  # 10,000 examples, minutes
@settings(max_examples=20 * EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(planted())
def test_no_planted_secret_survives_scrubbing_ten_thousand_times(case) -> None:
    check_planted(case)


GLUE = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=3)  # letters and digits


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(secret=SECRETS, data=st.data())
@example(secret="false", data=None)
def test_text_without_the_secret_and_without_uri_passwords_is_left_as_it_is(secret: str, data) -> None:
    """Nothing else is touched: a text in which no form of the secret stands (a short one glued
    inside a word, ``jobab`` for ``ab``, included) comes out as it went in."""
    if data is None:
        text = "training.bucket_by_length=False tracking.log_model=falsey jobfalse"
    else:
        text = data.draw(st.one_of(st.text(ANY_CHAR, max_size=60), st.builds(lambda a, b: a + secret + b, GLUE, GLUE)))
    assume(secret.strip("*") and "://" not in text and not leaked(secret, text))
    assert scrub_text(text, secrets_from_environment({"MY_TOKEN": secret})) == text


@settings(max_examples=EXAMPLES, deadline=None)
@given(password=SECRETS, user=st.sampled_from(["", "user", "me%40corp", "u@corp"]),
       host=st.sampled_from(["host.example", "[::1]", "127.0.0.1:6379", "[2001:db8::1]:8443", "h"]),
       tail=st.sampled_from(["", "/", "/db", "/p?x=1", "/p#frag", "?a=b"]))
def test_a_uri_password_of_any_shape_is_redacted_with_no_environment(password: str, user: str, host: str, tail: str) -> None:
    enc = urllib.parse.quote(password, safe="")
    assume(enc != MARK)
    uri = f"https://{user}:{enc}@{host}{tail}"
    assert redact(uri) == f"https://{user}:{MARK}@{host}{tail}"
    assert scrub_text(f"see {uri} and {uri}.", ()) == f"see https://{user}:{MARK}@{host}{tail} and https://{user}:{MARK}@{host}{tail}."
    query = f"mysql://db/x?user=me&password={urllib.parse.quote_plus(password)}&api_key={enc}&page=2"
    assert redact(query) == f"mysql://db/x?user=me&password={MARK}&api_key={MARK}&page=2"


#: What a password written raw in a URI can hold and the URI still read as one: any printable
#: character but white space, quotes, ``<>``, backquote (which end a URI in a text) and ``@``.
RAW_PASSWORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="@'\"<>`"), min_size=1, max_size=30)


@settings(max_examples=EXAMPLES, deadline=None)
@given(password=RAW_PASSWORD, user=st.sampled_from(["", "bob", "me%40corp"]),
       host=st.sampled_from(["db.example", "[::1]", "127.0.0.1:5432", "[2001:db8::1]:8443", "h"]),
       tail=st.sampled_from(["", "/", "/mlflow", "/p?x=1", "/p#frag", "?a=b"]))
@example(password="p/w", user="bob", host="db.example:5432", tail="/mlflow")
@example(password="p#w", user="bob", host="db.example", tail="")
@example(password="://", user="", host="db.example", tail="")  # found by the suite's draw in a fresh clone
def test_a_uri_password_written_raw_is_redacted(password: str, user: str, host: str, tail: str) -> None:
    """SQLAlchemy takes a password written raw, ``/``, ``?`` and ``#`` included
    (``postgresql://bob:p/w@db/mlflow``); the URI's split by its generic syntax ended the
    authority at the ``/`` and showed it (a helper's review, in the store check's error line)."""
    assume(password != MARK)
    uri = f"postgresql://{user}:{password}@{host}{tail}"
    told = scrub_text(f"error: cannot use MLflow tracking store {uri}: refused", ())
    assert told == f"error: cannot use MLflow tracking store postgresql://{user}:{MARK}@{host}{tail}: refused"


@pytest.mark.parametrize("uri, expected", [
    ("https://:pw@host/x", "https://:***@host/x"),
    ("redis://:pw@host", "redis://:***@host"),
    ("http://user:pw@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
    ("http://u%40corp:p%2Fw@[::1]:5000/a?b=1", "http://u%40corp:***@[::1]:5000/a?b=1"),
    ("HTTPS://u@corp:p@ss@h/", "HTTPS://u@corp:***@h/"),
    ("https://h/p?token=abc&page=2#x", "https://h/p?token=***&page=2#x"),
    ("s3://b/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00", "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("https://h/cb#access_token=abc&token_type=bearer", "https://h/cb#access_token=***&token_type=bearer"),
    ("postgresql://u:p@h/db?sslpassword=x;application_name=p", "postgresql://u:***@h/db?sslpassword=***;application_name=p"),
    ("http://[::1", "http://[::1"),  # malformed: kept, never an exception
    ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
    ("https://user@host/p?q=token", "https://user@host/p?q=token"),  # no password, and a value that is only a word
    ("postgresql://bob:p/w@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),  # raw, as SQLAlchemy takes it
    ("https://registry:5000/v2/img@sha256:abc", "https://registry:5000/v2/img@sha256:abc"),  # an @ in a path: no password
])
def test_every_uri_form_keeps_all_but_its_secrets(uri: str, expected: str) -> None:
    assert redact(uri) == expected
    assert scrub({"tracking.uri": uri, "note": f"pipeline train tracking.uri={uri} seed=1"}) == {
        "tracking.uri": expected, "note": f"pipeline train tracking.uri={expected} seed=1"}


@pytest.mark.parametrize("name", ["HF_TOKEN", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "MY_API_KEY2", "MLFLOW_TRACKING_PASSWORD",
                                  "npm_config__authToken", "DB_PASSWD", "GOOGLE_APPLICATION_CREDENTIALS", "SSH_PRIVATE_KEY", "DJANGO_SECRET_KEY"])
def test_names_like_secrets_are_secrets(name: str) -> None:
    assert SECRET_NAME.search(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "PWD", "PASSWORDLESS_LOGIN", "HOME", "KEYRING_BACKEND"])
def test_other_names_are_not(name: str) -> None:
    assert not SECRET_NAME.search(name)


# -- whole runs: every field that reaches MLflow, and the whole store read back


def store_texts(root: Path) -> Iterator[Tuple[str, str]]:
    """(where, text) for everything in the store under ``root``: every string of every row of every
    table of each SQLite file, every file that is text, every text member of every zip (a saved
    Keras model's config), and every file and member as raw bytes read as Latin-1 (nothing skipped)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        yield f"{path} (bytes)", raw.decode("latin-1")
        if raw.startswith(b"SQLite format 3"):
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                tables = [t for (t,) in db.execute("select name from sqlite_master where type = 'table'")]
                for table in tables:
                    for row in db.execute(f'select * from "{table}"'):
                        for value in row:
                            if isinstance(value, bytes):
                                value = value.decode("utf-8", "replace")
                            if isinstance(value, str):
                                yield f"{path}:{table}", value
            continue
        members = {}
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = {f"{path}!{name}": archive.read(name) for name in archive.namelist()}
        for where, content in [(str(path), raw), *members.items()]:
            try:
                yield where, content.decode("utf-8")
            except UnicodeDecodeError:
                yield f"{where} (bytes)", content.decode("latin-1")


def leaks_in_store(root: Path, secrets: List[str]) -> List[Tuple[str, str]]:
    """Every (secret, where) such that a form of ``secret`` stands in the store: long forms as
    bytes anywhere (binary files too); short ones as delimited values in text (in binary data a
    byte or two like any other mean nothing)."""
    found = []
    for where, text in store_texts(root):
        binary = where.endswith("(bytes)")
        for secret in secrets:
            for form in forms(secret):
                if (len(form) >= WHOLE_LENGTH or not binary) and occurs(form, text):
                    found.append((secret, where))
    return found


#: Ten secrets of 1 to 40 characters, of every kind of printable character (regex metacharacters,
#: `%`, `/`, `:`, `@`, `#`, spaces), each in a variable named like a secret.
PLANTED = {
    "A_TOKEN": "Q",
    "B_PASSWORD": "%7",
    "C_SECRET": "Z:@",
    "D_API_KEY": "(X|Y)",
    "E_ACCESS_KEY": "Zk.9-_x",
    "F_TOKEN": "P@ss:W0rd",
    "G_PRIVATE_KEY": "tok^[ab]{1,3}$x",
    "H_CREDENTIALS": "Cr3d-/?#[]!*+;=%40 xyzQW",
    "I_SECRET": "s3cr3t/with:colons@and%percent&amp=40chr",
    "K_TOKEN": "Scope.valid-Secret_21",  # long, and a valid TensorFlow scope name: for model.name
}
#: URI passwords in no environment variable, typed on the command line: caught as URI passwords.
LITERAL = {"https://:LitPw0rd1@h.example/x": "LitPw0rd1", "redis://u@corp:Lit%2FPw2x@[::1]:6379/0": "Lit%2FPw2x",
           "https://h.example/p?api_key=LitKey3xy&page=2": "LitKey3xy"}
#: MLflow's own tags of every run and logged model (its context providers) read this variable.
CONTEXT = {"MLFLOW_RUN_CONTEXT": json.dumps({"deployed.from": "https://:CtxPw0rd9@h.example"})}
#: A word of the data that is also a secret: data, logged as the model holds it.
DATA_WORD = {"J_TOKEN": "delightful"}


def _cli_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_no_planted_secret_reaches_the_store_from_any_field_of_a_train_run(tmp_path: Path, store_uri: str) -> None:
    """One real `pipeline train` (shrunk): ten secrets of 1-40 characters interpolated into the run
    name (also inside URIs of every form), the experiment name, the model's name (in the Keras
    model's summary and its saved config), the dataset's name (tags, dataset inputs), one typed on
    the command line (the run's description), URI passwords typed there and one in MLflow's own
    run context; then every table row and every file of the store is read, and every file Hydra
    wrote beside the job (its .hydra/ records and log)."""
    env = {**PLANTED, **DATA_WORD, **CONTEXT, "TOKENIZERS_PARALLELISM": "false"}
    assert len(PLANTED) == 10 and min(map(len, PLANTED.values())) == 1 and max(map(len, PLANTED.values())) == 40
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=120)
    i = "${oc.env:I_SECRET}"
    run_name = " ".join([
        *(f"r-${{oc.env:{k}}}" for k in PLANTED), "https://:${oc.env:B_PASSWORD}@h/x",
        "redis://u@corp:${oc.env:F_TOKEN}@[::1]:6379/0", "https://h/p?token=${oc.env:E_ACCESS_KEY}&page=2", *LITERAL,
        "typed:" + PLANTED["H_CREDENTIALS"],
    ])
    result = run_cli(
        ["train", *SHRINK, "dataset=files", f"dataset.path={data}", "tracking.run_name=" + _cli_quoted(run_name),
         "tracking.experiment_name=" + _cli_quoted(f"team-{i}-${{oc.env:A_TOKEN}}"),
         "model.name=" + _cli_quoted("lstm-${oc.env:A_TOKEN}-${oc.env:E_ACCESS_KEY}-${oc.env:K_TOKEN}"),  # a TensorFlow scope name
         "dataset.name=" + _cli_quoted("reviews-${oc.env:G_PRIVATE_KEY}.${oc.env:B_PASSWORD}")],
        cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(store_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name.startswith("team-")]
    assert experiment.name == "team-***-***"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name.startswith("r-*** r-*** r-*** r-*** ") and "https://:***@h/x" in run.info.run_name
    assert "redis://u@corp:***@[::1]:6379/0" in run.info.run_name and "?token=***&page=2" in run.info.run_name
    assert run.data.params["tracking.run_name"] == run.info.run_name
    assert run.data.params["model.name"] == "lstm-***-***-***" and run.data.tags["dataset"] == "reviews-***.***"
    assert "https://h.example/p?api_key=***&page=2" in run.data.tags["mlflow.note.content"]
    assert "typed:***" in run.data.tags["mlflow.note.content"]
    import mlflow
    import yaml

    mlflow.set_tracking_uri(store_uri)
    resolved = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/resolved_config.yaml"))
    assert resolved["training"]["bucket_by_length"] in (True, False)  # TOKENIZERS_PARALLELISM=false is no secret
    artifacts = tmp_path / "mlruns"
    summary = next(artifacts.rglob("model_summary.txt")).read_text()
    assert "lstm-***-***-***" in summary  # MLflow's Keras callback's artifact, scrubbed

    assert run.data.tags["deployed.from"] == "https://:***@h.example"  # a tag of MLflow's own
    leaks = leaks_in_store(artifacts, [*PLANTED.values(), *LITERAL.values(), "CtxPw0rd9"])
    assert not leaks, leaks[:20]
    # Hydra's own records of the job (.hydra/overrides.yaml holds the command line as typed)
    (overrides,) = (tmp_path / "outputs").rglob("overrides.yaml")
    assert "tracking.run_name=" in overrides.read_text() and "https://:***@h.example/x" in overrides.read_text()
    leaks = leaks_in_store(tmp_path / "outputs", [*PLANTED.values(), *LITERAL.values()])
    assert not leaks, leaks[:20]

    # a vocabulary is data: the token that equals a secret stays, and the artifact is the model's vocabulary
    vocabulary = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/data/vocabulary.txt").split("\n")
    keras_file = next(artifacts.rglob("text_classifier.keras"))
    import keras

    import pipeline.pyfunc_model  # noqa: F401 - registers the pooling layers the model holds

    model = keras.saving.load_model(keras_file, safe_mode=True)
    (vectorizer,) = [layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)]
    assert "delightful" in vocabulary and vocabulary == vectorizer.get_vocabulary()


def test_a_model_registered_under_a_name_with_secrets_is_registered_scrubbed(tmp_path: Path, make_cfg, store_uri: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered model's name (a search's ``tuner.final.registered_model_name``, by default
    ``lstm-<dataset.name>``), its version tags and the logged model's own tags: scrubbed, and the
    registry's queries given the config's name find the scrubbed one."""
    import keras
    import mlflow

    from pipeline import tracking

    secrets = {"REG_TOKEN": "Rg", "REG_SECRET": "registry-Secret_0042"}
    for name, value in {**secrets, **CONTEXT}.items():
        monkeypatch.setenv(name, value)
    raw = "lstm-Rg.registry-Secret_0042"
    vectorizer = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorizer.adapt(["a good film", "a bad film"])
    text = keras.Input(shape=(), dtype="string", name="text")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(vectorizer(text)))
    keras.Model(text, keras.layers.Dense(2, activation="softmax")(hidden)).save(tmp_path / "m.keras")
    cfg = make_cfg()
    mlflow.set_tracking_uri(store_uri)
    with tracking.tracked_run(cfg.tracking, "r", {}) as run:
        tracking.log_text_model(str(tmp_path / "m.keras"), ["neg", "pos"], ["mlflow"], ["a good film"], raw,
                                {"best_trial_id": "0", "from": "Rg", "test_accuracy": "0.5", "data_fingerprint": "fp"})
    client = MlflowClient(store_uri)
    assert [m.name for m in client.search_registered_models()] == ["lstm-***.***"]
    version = tracking.search_version(store_uri, raw, run.info.run_id, {"best_trial_id": "0"})
    assert version is not None and version.tags["from"] == "***"
    assert tracking.registered_for(store_uri, raw, run.info.run_id, {"best_trial_id": "0"})
    assert "lstm-***.*** v1 is now @champion" in tracking.promote(store_uri, raw, version, "test_accuracy", True, "auto")
    logged = client.get_logged_model(client.get_run(run.info.run_id).outputs.model_outputs[0].model_id)
    assert logged.tags["deployed.from"] == "https://:***@h.example"
    leaks = leaks_in_store(tmp_path / "mlruns", [*secrets.values(), "CtxPw0rd9"])
    assert not leaks, leaks[:20]


@pytest.mark.stress  # a whole search, 1-3 minutes on 2 cores
def test_no_planted_secret_reaches_the_store_from_a_search(tmp_path: Path, store_uri: str) -> None:
    """`pipeline tune`: the parent run, each trial's run, the final model's refit, the search's
    artifacts (space, trials table, best values), the tuner project's name and folder as tags, and
    the registered model (named ``lstm-<dataset.name>``), with secrets in the dataset's and the
    model's names and MLflow's run context; then the whole store is read."""
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=160)
    result = run_cli(
        ["tune", *SHRINK, *SPACE, "tuner.max_trials=2", "dataset=files", f"dataset.path={data}",
         "dataset.name=" + _cli_quoted("reviews-${oc.env:G_PRIVATE_KEY}.${oc.env:A_TOKEN}"),
         "model.name=" + _cli_quoted("lstm-${oc.env:A_TOKEN}-${oc.env:K_TOKEN}")],
        cwd=tmp_path, env={**PLANTED, **CONTEXT},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(store_uri)
    runs = runs_in(store_uri)
    assert len(runs) >= 4 and {r.data.tags["dataset"] for r in runs if "dataset" in r.data.tags} == {"reviews-***.***"}
    assert [m.name for m in client.search_registered_models()] == ["lstm-reviews-***.***"]
    leaks = leaks_in_store(tmp_path / "mlruns", [*PLANTED.values(), "CtxPw0rd9"])
    assert not leaks, leaks[:20]


@pytest.mark.no_store
def test_hydra_records_of_a_multirun_job_are_scrubbed_before_the_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The callback on Hydra's own files (each job's .hydra/*.yaml, the sweep's multirun.yaml, the
    job's log): the files as Hydra wrote them, each with a URI password and an environment secret."""
    from omegaconf import OmegaConf
    from hydra.types import RunMode

    from pipeline.hydra_files import ScrubOutputs

    monkeypatch.setenv("F_TOKEN", PLANTED["F_TOKEN"])
    sweep, job = tmp_path / "multirun", tmp_path / "multirun" / "0"
    (job / ".hydra").mkdir(parents=True)
    secret_text = f"uri: https://u:LitPw0rd1@h.example/x\nname: a-{PLANTED['F_TOKEN']}\n"
    files = [job / ".hydra" / n for n in ("config.yaml", "overrides.yaml", "hydra.yaml")] + [sweep / "multirun.yaml", job / "train.log"]
    for path in files:
        path.write_text(secret_text)
    config = OmegaConf.create({"hydra": {"output_subdir": ".hydra", "mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(job)},
                                         "sweep": {"dir": str(sweep)}, "job": {"name": "train"}}})
    callback = ScrubOutputs()
    callback.on_job_start(config)
    assert [p.read_text() for p in files[:4]] == ["uri: https://u:***@h.example/x\nname: a-***\n"] * 4
    assert files[4].read_text() == secret_text  # the log: once the job has written it
    callback.on_job_end(config)
    assert files[4].read_text() == "uri: https://u:***@h.example/x\nname: a-***\n"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(p.name for p in files)  # nothing beside them


@pytest.mark.no_store
@pytest.mark.parametrize("command, args", [
    # overrides Hydra's grammar refuses unquoted: a query parameter, an IPv6 host
    ("train", ["tracking.uri=postgresql://bob@127.0.0.1:1/db?password=Hunter2SecretXYZ"]),
    ("train", ["tracking.uri=http://:Hunter2SecretXYZ@[::1]:1"]),
    ("train", ["dataset.url=https://u:Hunter2SecretXYZ@example.com/x.tgz?token=Hunter2SecretXYZ"]),
    ("predict", ["abc", "hello", "tracking.uri='http://u:Hunter2SecretXYZ@h:5000"]),  # an unterminated quote
    ("train", ["training.optimizer=http://u:Hunter2SecretXYZ@h"]),  # a value OmegaConf repeats
    ("train", ["training.optimizer=${oc.env:MY_TOKEN}"]),  # an environment secret's value, resolved
    ("train", ["-m", "seed=1,2", "training.epochs=0", "tracking.run_name=https://u:Hunter2SecretXYZ@h"]),  # a sweep's job, as told
], ids=["query-password", "ipv6-password", "dataset-url", "unterminated-quote", "bad-value", "env-secret", "sweep-job"])
def test_an_error_line_never_shows_a_secret(tmp_path: Path, command: str, args: List[str]) -> None:
    """Found by a helper's hunt: Hydra's and OmegaConf's messages repeat the override or the value
    as typed, and the one error line printed them, password and all."""
    result = run_cli([command, *SHRINK, *args], cwd=tmp_path, env={"MY_TOKEN": "Hunter2SecretXYZ"})
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr[-2000:]
    assert "Hunter2SecretXYZ" not in result.stdout + result.stderr and "***" in result.stderr
    assert list(tmp_path.iterdir()) == []
