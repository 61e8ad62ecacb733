"""`pipeline train` end to end: the real CLI, a real SQLite store, checked through MlflowClient."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from conftest import SHRINK, curve, run_cli, runs_in, write_sentiment_csv
from pipeline import train


def _only_run(uri: str):
    client = MlflowClient(uri)
    runs = runs_in(uri)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_train_on_a_bbc_news_slice_records_the_whole_run(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(["train", *SHRINK, "training.epochs=2", "dataset.max_samples=250"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert len(summary) == 1 and "test_accuracy=" in summary[0] and "mlflow ui --backend-store-uri" in summary[0]

    client, run = _only_run(store_uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_id in summary[0]
    assert run.info.run_name == "bbc_news-lstm-s42"
    params = run.data.params
    assert params["dataset.name"] == "bbc_news" and params["model.units"] == "8" and params["seed"] == "42"
    assert params["training.epochs"] == "2" and params["data.num_classes"] == "5"

    epochs = int(run.data.metrics["epochs_trained"])
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(epochs)), key
    for key in ("test_accuracy", "test_loss", "test_precision_macro", "test_recall_macro", "test_f1_macro", "test_mcc"):
        assert key in run.data.metrics
    assert "test_roc_auc" not in run.data.metrics  # five classes
    # the 95% interval on the test accuracy, on the run and in the last line
    low, high = run.data.metrics["test_accuracy_ci_low"], run.data.metrics["test_accuracy_ci_high"]
    assert 0.0 <= low < run.data.metrics["test_accuracy"] < high <= 1.0
    assert f"test_accuracy={run.data.metrics['test_accuracy']:.4f} [{low:.4f}, {high:.4f}]" in summary[0]

    tags = run.data.tags
    assert tags["dataset"] == "bbc_news" and tags["model"] == "lstm"
    # MLflow-native records: the command line as the description, the splits as dataset inputs with
    # the pipeline's fingerprints as digests, a model-training experiment (the UI opens on its runs)
    assert tags["mlflow.note.content"] == "pipeline train +debug=fast training.epochs=2 dataset.max_samples=250"
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "validation"]
    for context, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        assert inputs[context].name == f"bbc_news-{split}"
        assert tags[f"data_fingerprint.{split}"].startswith(inputs[context].digest) and len(inputs[context].digest) == 16
    assert json.loads(inputs["train"].profile)["num_rows"] == int(params["data.train_texts"])
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]) and tags["git_dirty"] in ("true", "false")
    assert re.fullmatch(r"[0-9a-f]{64}", tags["data_fingerprint"]) and re.fullmatch(r"[0-9a-f]{64}", tags["config_hash"])
    assert tags["version.tensorflow"].startswith("2.") and tags["version.keras"].startswith("3.")

    artifacts = _artifacts(client, run.info.run_id)
    assert {
        "config/resolved_config.yaml",
        "config/overrides.yaml",
        "data/vocabulary.txt",
        "data/label_map.json",
        "plots/learning_curves.png",
        "plots/confusion_matrix.png",
        "evaluation/misclassified.csv",
    } <= artifacts
    overrides = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/overrides.yaml"))
    assert "training.epochs=2" in overrides["overrides"]
    resolved = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/resolved_config.yaml"))
    assert resolved["training"]["epochs"] == 2 and resolved["tracking"]["uri"] == store_uri
    label_map = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/data/label_map.json")
    assert label_map["classes"] == ["business", "entertainment", "politics", "sports", "tech"]
    png = Path(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/plots/learning_curves.png", dst_path=str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    mlflow.set_tracking_uri(store_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = model.predict(pd.DataFrame({"text": ["Shares fell as the bank cut its profit forecast.", "The striker scored twice."]}))
    assert list(out.columns) == ["label", "confidence", "probabilities"]
    assert set(out["label"]) <= set(label_map["classes"])
    for probs in out["probabilities"]:
        assert set(probs) == set(label_map["classes"]) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_train_on_a_csv_it_has_never_seen_learns_and_predicts(tmp_path: Path, store_uri: str) -> None:
    csv = write_sentiment_csv(tmp_path / "reviews.csv", n=300)
    result = run_cli(
        [
            "train", *SHRINK, "dataset=files", f"dataset.path={csv}", "dataset.text_column=text",
            "dataset.label_column=label", "training.epochs=8", "training.learning_rate=0.01",
            "model.units=16", "model.embedding_dim=16",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client, run = _only_run(store_uri)
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "files-reviews"
    # the splits' dataset inputs name the file they came from, and say so without MLflow's warning
    # that a local path is ambiguous (two registered source classes of one name)
    assert "UserWarning" not in result.stderr and "interpreted in multiple ways" not in result.stderr, result.stderr[-2000:]
    for entry in run.inputs.dataset_inputs:
        assert entry.dataset.source_type == "local" and json.loads(entry.dataset.source) == {"uri": str(csv)}
    # The cue words decide the label: a pipeline that trains at all gets this right.
    assert run.data.metrics["test_accuracy"] >= 0.9
    assert 0.5 < run.data.metrics["test_roc_auc"] <= 1.0
    mlflow.set_tracking_uri(store_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    out = model.predict(pd.DataFrame({"text": ["a great superb film", "an awful dreadful film"]}))
    assert out["label"].tolist() == ["positive", "negative"]


def test_class_files_whose_labels_are_no_param_names_train_and_are_recorded(tmp_path: Path, make_cfg, store_uri: str) -> None:
    """Found by a helper's hunt: ``dataset.class_files`` flattened into params named by its labels
    (``dataset.class_files.c++``), which MLflow refuses: a traceback and a FAILED run."""
    from omegaconf import open_dict

    files = {}
    for label, words in (("c++", "compile template pointer"), ("⚽ sport", "goal match team"), ("money 💰", "bank market price")):
        path = tmp_path / f"{len(files)}.txt"
        path.write_text("".join(f"{words} {i} {words.split()[i % 3]}\n" for i in range(30)), encoding="utf-8")
        files[label] = str(path)
    cfg = make_cfg("dataset=files", "dataset.format=lines", "tracking.log_model=false")
    with open_dict(cfg):
        cfg.dataset.class_files = files
    train.run(cfg)
    (run,) = runs_in(store_uri)
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.params["dataset.class_files"]) == files  # one param, its JSON


def test_a_run_is_reproducible_with_the_same_seed(make_cfg, store_uri: str) -> None:
    cfg = make_cfg("dataset.max_samples=200", "training.epochs=2", "tracking.log_model=false")
    first = train.run(cfg)
    second = train.run(cfg)
    client = MlflowClient(store_uri)
    runs = runs_in(store_uri)
    assert len(runs) == 2 and first == second
    losses = [curve(client, r.info.run_id, "val_loss") for r in runs]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    assert runs[0].data.tags["config_hash"] == runs[1].data.tags["config_hash"]
    assert runs[0].data.tags["data_fingerprint"] == runs[1].data.tags["data_fingerprint"]


@pytest.mark.parametrize("alpha", ["null", "0.5"])
def test_a_fit_traces_its_training_step_once(make_cfg, alpha: str) -> None:
    """Most of a small dataset's trial is TensorFlow tracing the training step. Keras makes the
    optimizer's and the metrics' variables while tracing it unless they exist, and TensorFlow then
    traces it again: about a second of every fit on 2 cores. (A distilled fit is compiled again,
    with its own metric.) That the fit computes the same as before is the reproducibility tests'."""
    from pipeline import experiment
    from pipeline.model import build_model

    cfg = make_cfg("dataset.max_samples=150", "training.epochs=2", f"training.distill.alpha={alpha}")
    prepared = experiment.prepare(cfg)
    model = build_model(cfg, prepared.shape)
    traced = []
    step = model.train_step
    model.train_step = lambda data: traced.append(data) or step(data)
    history = experiment.fit(model, prepared, cfg.training, cfg.seed).history
    assert len(history["loss"]) == 2 and len(traced) == 1


def test_training_threads_changes_how_fast_a_fit_runs_not_what_it_computes(tmp_path: Path, store_uri: str) -> None:
    # what tuner.workers relies on when it gives each worker one thread of a 2-core machine: the
    # same losses and accuracies as with two threads (math libraries promise the same bits only for
    # one thread count; these two are the ones measured here)
    shrunk = [*SHRINK, "dataset.max_samples=200", "training.epochs=2", "tracking.log_model=false"]
    for threads in (2, 1):
        result = run_cli(["train", *shrunk, f"training.threads={threads}"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store_uri)
    two, one = sorted(runs_in(store_uri), key=lambda r: r.info.start_time)
    assert (two.data.params["training.threads"], one.data.params["training.threads"]) == ("2", "1")
    for key in ("loss", "val_loss", "val_accuracy"):
        assert curve(client, one.info.run_id, key) == curve(client, two.info.run_id, key), key


def test_training_threads_sizes_tensorflows_pools_before_it_runs_and_warns_once_it_has(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "from pipeline import experiment; import tensorflow as tf; t = tf.config.threading\n"
        "experiment.use_threads(1); tf.constant(1.0) + 1\n"
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n"
        "experiment.use_threads(2); print(t.get_intra_op_parallelism_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1", "1", "1"]
    assert "training.threads=2 not applied: TensorFlow is already running in this process" in done.stderr


def test_multirun_sweeps_seeds_into_separate_runs(tmp_path: Path, store_uri: str) -> None:
    result = run_cli(
        ["train", "-m", *SHRINK, "dataset.max_samples=150", "tracking.log_model=false", "seed=1,2"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [r for r in runs_in(store_uri) if "sweep.id" not in r.data.tags]  # the jobs, not the sweep's parent
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].data.tags["data_fingerprint"] != runs[1].data.tags["data_fingerprint"]
    (parent,) = [r for r in runs_in(store_uri) if "sweep.id" in r.data.tags]
    from pipeline import rerun  # (in this process: no TensorFlow start-up for a refusal)
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="is a sweep's parent run; rerun one of its jobs"):  # once: "not recorded by pipeline train or tune"
        rerun.run(parent.info.run_id, [], tracking_uri=store_uri)


def test_pretrained_vectors_coverage_is_logged(tmp_path: Path, make_cfg, store_uri: str) -> None:
    csv = write_sentiment_csv(tmp_path / "d.csv", n=120)
    vectors = tmp_path / "glove.txt"
    rng = np.random.default_rng(0)
    words = ["good", "great", "bad", "awful", "film", "notaword"]
    vectors.write_text("".join(f"{w} {' '.join(f'{x:.4f}' for x in rng.normal(size=4))}\n" for w in words))
    cfg = make_cfg(
        "dataset=files", f"dataset.path={csv}", "model.embedding_dim=4", f"model.pretrained.path={vectors}",
        "tracking.log_model=false",
    )
    train.run(cfg)
    run = runs_in(store_uri)[0]
    vocabulary_size = int(run.data.params["data.vocabulary_size"]) - 2  # less padding and [UNK]
    assert run.data.metrics["pretrained_coverage"] == pytest.approx(5 / vocabulary_size)


def test_a_cosine_schedule_lowers_the_rate_every_epoch_and_records_it(make_cfg, store_uri: str) -> None:
    # training.lr_schedule=cosine (the default): epoch e of training.epochs trains at
    # lr x (1 + cos(pi e / epochs)) / 2, and the rate of each epoch is on the run beside its loss
    # (constant records none)
    cfg = make_cfg("dataset.max_samples=200", "training.epochs=3", "training.learning_rate=0.004",
                   "training.early_stopping.enabled=false", "tracking.log_model=false")
    train.run(cfg)
    (run,) = runs_in(store_uri)
    rates = curve(MlflowClient(store_uri), run.info.run_id, "learning_rate")
    assert rates == pytest.approx([0.004, 0.003, 0.001])
    assert run.data.params["training.lr_schedule"] == "cosine"
