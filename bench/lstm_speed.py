"""LSTM training speed on one CPU: the pipeline, the classic tutorial's Keras code and PyTorch.

Trains the pipeline's default model (Embedding 128 -> LSTM 128 -> Dense, batch 64, Adam 1e-3)
for --epochs epochs on the same training texts, --repeats times, the variants interleaved in
each repetition so that a noisy machine slows them alike:

  pipeline           the pipeline as a user runs it (its config, tf.data input, length buckets)
  pipeline_unbucketed  the same with training.bucket_by_length=false (the lever, measured)
  tutorial           the classic Keras tutorial: one vocabulary, every text padded to the longest
  torch_packed       PyTorch nn.LSTM on pack_padded_sequence batches, the same sizes

Each variant runs in its own process. Speed is the median of the epochs after the first (the
first, with Keras's tracing, is reported beside it); real tokens are the non-padding tokens a
variant reads. Also measured: the GEMM rate of the LSTM step's shape, batch x (embedding +
units) x 4*units, and from it the FLOP floor of an epoch (forward and backward, 3 x 2 x
(embedding + units) x 4 x units per real token). Test accuracy after the last epoch is reported
beside the speed. Writes bench/results/lstm_speed.{md,json} and logs both to MLflow.

    pip install -e ".[bench]" && python bench/lstm_speed.py [--train PATH --test PATH] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PIPELINE_DATA_DIR", ROOT.parent / "shared" / "data"))
VARIANTS = ("pipeline", "pipeline_unbucketed", "tutorial", "torch_packed")
EMBEDDING, UNITS, BATCH, LR = 128, 128, 64, 1e-3


# --------------------------------------------------------------------------- one variant, one process


def _prepared(args: argparse.Namespace, bucket: bool) -> Any:
    """The pipeline's own reading, dedupe, splits and vectorizer: the texts every variant trains on."""
    from pipeline import config, experiment

    overrides = [
        "dataset=sst2",
        f"dataset.path={args.train}",
        f"dataset.val_path={args.dev}",
        f"dataset.test_path={args.test}",
        f"seed={args.seed}",
        f"training.epochs={args.epochs}",
        f"training.batch_size={BATCH}",
        f"training.learning_rate={LR}",
        f"training.bucket_by_length={str(bucket).lower()}",
        "training.early_stopping.enabled=false",
        "training.verbose=0",
        "model=lstm",
        f"model.embedding_dim={EMBEDDING}",
        f"model.units={UNITS}",
    ]
    cfg = config.compose_train(overrides)
    experiment.seed_everything(cfg.seed, cfg.training.deterministic)
    return cfg, experiment.prepare(cfg)


def _keras_timer() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch's training steps (validation excluded)."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: List[float] = []
            self._start = 0.0
            self._open = False

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start, self._open = time.perf_counter(), True

        def _close(self) -> None:
            if self._open:
                self.seconds.append(time.perf_counter() - self._start)
                self._open = False

        def on_test_begin(self, logs: Any = None) -> None:
            self._close()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self._close()

    return EpochTimer()


def run_pipeline(args: argparse.Namespace, bucket: bool) -> Dict[str, Any]:
    import numpy as np

    from pipeline import experiment
    from pipeline.model import build_model, class_probabilities

    cfg, prepared = _prepared(args, bucket)
    model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
    timer = _keras_timer()
    experiment.fit(model, prepared, cfg.training, cfg.seed, callbacks=[timer])
    x_test, y_test = prepared.encoded["test"]
    accuracy = float(np.mean(class_probabilities(model, x_test).argmax(1) == y_test))
    ids = prepared.encoded["train"][0]
    return {
        "epoch_seconds": timer.seconds,
        "sentences": int(len(ids)),
        "real_tokens": int(np.count_nonzero(ids)),
        "padded_tokens": _padded_tokens(ids, bucket),
        "test_accuracy": accuracy,
    }


def _padded_tokens(ids: Any, bucket: bool) -> int:
    """Tokens (real and padding) the LSTM steps over in one epoch of the pipeline's batches."""
    from pipeline import data

    datasets = data.make_datasets({"train": (ids, ids[:, 0])}, BATCH, seed=0, bucket_by_length=bucket)
    return int(sum(int(x.shape[0]) * int(x.shape[1]) for x, _ in datasets["train"]))


def _tutorial_ids(args: argparse.Namespace) -> Any:
    """The tutorial's preprocessing: one vocabulary of every training word, padded to the longest."""
    import keras
    import numpy as np

    _, prepared = _prepared(args, bucket=False)
    splits = prepared.splits
    vectorizer = keras.layers.TextVectorization(standardize="lower", output_mode="int")
    vectorizer.adapt(np.array(splits.train.texts, dtype=object))
    x_train = np.asarray(vectorizer(np.array(splits.train.texts, dtype=object)), dtype="int64")
    x_test = np.asarray(vectorizer(np.array(splits.test.texts, dtype=object)), dtype="int64")
    y_train = splits.label_ids(splits.train).astype("float32")
    y_test = splits.label_ids(splits.test)
    return len(vectorizer.get_vocabulary()), x_train, y_train, x_test, y_test


def run_tutorial(args: argparse.Namespace) -> Dict[str, Any]:
    import keras
    import numpy as np

    vocab, x_train, y_train, x_test, y_test = _tutorial_ids(args)
    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int64"),
            keras.layers.Embedding(vocab, EMBEDDING, mask_zero=True),
            keras.layers.LSTM(UNITS),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(LR), loss="binary_crossentropy", metrics=["accuracy"])
    timer = _keras_timer()
    model.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, shuffle=True, verbose=0, callbacks=[timer])
    accuracy = float(np.mean((model.predict(x_test, batch_size=256, verbose=0)[:, 0] > 0.5) == y_test))
    return {
        "epoch_seconds": timer.seconds,
        "sentences": int(len(x_train)),
        "real_tokens": int(np.count_nonzero(x_train)),
        "padded_tokens": int(x_train.size),
        "test_accuracy": accuracy,
    }


def run_torch(args: argparse.Namespace) -> Dict[str, Any]:
    import numpy as np
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence

    # token ids from a TensorFlow process: torch segfaulted here importing torch._dynamo beside TF
    with np.load(args.ids) as f:
        vocab, x_train, y_train, x_test, y_test = (int(f["vocab"]), f["x_train"], f["y_train"], f["x_test"], f["y_test"])
    torch.manual_seed(args.seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab, EMBEDDING, padding_idx=0)
            self.lstm = nn.LSTM(EMBEDDING, UNITS, batch_first=True)
            self.out = nn.Linear(UNITS, 1)

        def forward(self, x: Any, lengths: Any) -> Any:
            packed = pack_padded_sequence(self.embedding(x), lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return self.out(h[-1]).squeeze(1)

    def lengths_of(x: np.ndarray) -> Any:
        return torch.from_numpy(np.maximum(np.count_nonzero(x, axis=1), 1))

    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.BCEWithLogitsLoss()
    xs, ys, ls = torch.from_numpy(x_train), torch.from_numpy(y_train), lengths_of(x_train)
    generator = torch.Generator().manual_seed(args.seed)
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        net.train()
        for idx in torch.randperm(len(xs), generator=generator).split(BATCH):
            optimizer.zero_grad()
            loss = loss_fn(net(xs[idx], ls[idx]), ys[idx])
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(x_test), lengths_of(x_test)).numpy()
    return {
        "epoch_seconds": seconds,
        "sentences": int(len(x_train)),
        "real_tokens": int(ls.sum()),
        "padded_tokens": int(ls.sum()),
        "test_accuracy": float(np.mean((logits > 0) == y_test)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def export_ids(args: argparse.Namespace) -> None:
    import numpy as np

    vocab, x_train, y_train, x_test, y_test = _tutorial_ids(args)
    np.savez(args.ids, vocab=vocab, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def worker(args: argparse.Namespace) -> None:
    if args.worker == "export_ids":
        export_ids(args)
        return
    runner = {
        "pipeline": lambda: run_pipeline(args, bucket=True),
        "pipeline_unbucketed": lambda: run_pipeline(args, bucket=False),
        "tutorial": lambda: run_tutorial(args),
        "torch_packed": lambda: run_torch(args),
    }[args.worker]
    print("RESULT " + json.dumps(runner()), flush=True)


# --------------------------------------------------------------------------- the machine's ceiling


def gemm_rate(seconds: float = 3.0) -> Dict[str, float]:
    """GFLOP/s of (batch x (embedding + units)) @ ((embedding + units) x 4 units): NumPy and TensorFlow."""
    import numpy as np
    import tensorflow as tf

    m, k, n = BATCH, EMBEDDING + UNITS, 4 * UNITS
    flop = 2.0 * m * k * n
    a = np.random.default_rng(0).standard_normal((m, k)).astype("float32")
    b = np.random.default_rng(1).standard_normal((k, n)).astype("float32")
    rates = {}
    out = np.empty((m, n), dtype="float32")
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            np.matmul(a, b, out=out)
        count += 100
    rates["numpy"] = count * flop / (time.perf_counter() - start) / 1e9

    @tf.function
    def chain(a: Any, b: Any, steps: Any) -> Any:
        # each product depends on the last (as an LSTM step does), so none is folded or hoisted
        acc = tf.zeros((m, n))
        for _ in tf.range(steps):
            acc = tf.matmul(a + 1e-9 * acc[:, :k], b)
        return acc

    ta, tb = tf.constant(a), tf.constant(b)
    chain(ta, tb, tf.constant(10)).numpy()
    steps = 4000
    start = time.perf_counter()
    chain(ta, tb, tf.constant(steps)).numpy()
    rates["tensorflow"] = steps * flop / (time.perf_counter() - start) / 1e9
    return {k: round(v, 1) for k, v in rates.items()}


# --------------------------------------------------------------------------- the table


def _median(values: List[float]) -> float:
    return float(statistics.median(values))


def _steady_epoch_s(run: Dict[str, Any]) -> float:
    """One repetition's epoch time: the median of its epochs after the first (tracing)."""
    return _median(run["epoch_seconds"][1:] or run["epoch_seconds"])


def summarize(runs: Dict[str, List[Dict[str, Any]]], gemm: Dict[str, float], args: argparse.Namespace) -> Dict[str, Any]:
    rows = {}
    for name, reps in runs.items():
        steady = [_steady_epoch_s(r) for r in reps]
        first = [r["epoch_seconds"][0] for r in reps]
        r0 = reps[0]
        rows[name] = {
            "epoch_s": round(_median(steady), 3),
            "epoch_s_all": [round(s, 3) for s in steady],
            "first_epoch_s": round(_median(first), 3),
            "sentences_per_s": round(r0["sentences"] / _median(steady)),
            "real_tokens_per_s": round(r0["real_tokens"] / _median(steady)),
            "real_tokens": r0["real_tokens"],
            "padding_share": round(1.0 - r0["real_tokens"] / r0["padded_tokens"], 3),
            "test_accuracy": round(_median([r["test_accuracy"] for r in reps]), 4),
            "test_accuracy_all": [round(r["test_accuracy"], 4) for r in reps],
        }

    def ratio(a: str, b: str) -> float:
        # per repetition (side by side in time), then the median
        per_rep = [
            (ra["real_tokens"] / _steady_epoch_s(ra)) / (rb["real_tokens"] / _steady_epoch_s(rb))
            for ra, rb in zip(runs[a], runs[b])
        ]
        return round(_median(per_rep), 2)

    rate = max(gemm.values())
    flop_per_token = 3 * 2 * (EMBEDDING + UNITS) * 4 * UNITS
    floor_s = rows["pipeline"]["real_tokens"] * flop_per_token / (rate * 1e9)
    ratios = {
        "pipeline/tutorial": ratio("pipeline", "tutorial"),
        "pipeline/torch_packed": ratio("pipeline", "torch_packed"),
        "pipeline/pipeline_unbucketed": ratio("pipeline", "pipeline_unbucketed"),
        "floor/pipeline": round(floor_s / rows["pipeline"]["epoch_s"], 3),
    }
    accuracy_gap = round(100 * (rows["pipeline"]["test_accuracy"] - rows["tutorial"]["test_accuracy"]), 2)
    targets = {
        "pipeline >= 1.5x torch_packed (real tokens/s)": ratios["pipeline/torch_packed"] >= 1.5,
        "pipeline within 3x of the FLOP floor": rows["pipeline"]["epoch_s"] <= 3 * floor_s,
        "test accuracy within 0.5 points of the tutorial's": abs(accuracy_gap) <= 0.5,
    }
    return {
        "train": str(args.train),
        "test": str(args.test),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "model": f"Embedding {EMBEDDING} -> LSTM {UNITS} -> Dense, batch {BATCH}, Adam {LR}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "gemm_gflops": gemm,
        "floor_epoch_s": round(floor_s, 3),
        "variants": rows,
        "ratios": ratios,
        "accuracy_gap_points": accuracy_gap,
        "targets": targets,
    }


def markdown(result: Dict[str, Any]) -> str:
    lines = [
        "# LSTM training speed (bench/lstm_speed.py)",
        "",
        f"{result['model']}; train `{result['train']}`, test `{result['test']}`; {result['epochs']} epochs x "
        f"{result['repeats']} repetitions, variants interleaved; {result['machine']}.",
        "Epoch = median over repetitions of the median epoch after the first; tokens/s counts real (non-padding) tokens.",
        "",
        "| variant | epoch s | first epoch s | sentences/s | real tokens/s | padding share | test acc (median) | test acc per rep |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in result["variants"].items():
        lines.append(
            f"| {name} | {r['epoch_s']:.2f} | {r['first_epoch_s']:.2f} | {r['sentences_per_s']:,} | "
            f"{r['real_tokens_per_s']:,} | {r['padding_share']:.0%} | {r['test_accuracy']:.4f} | "
            f"{', '.join(f'{a:.4f}' for a in r['test_accuracy_all'])} |"
        )
    gemm = ", ".join(f"{k} {v} GFLOP/s" for k, v in result["gemm_gflops"].items())
    lines += [
        "",
        f"GEMM ({BATCH} x {EMBEDDING + UNITS} x {4 * UNITS}): {gemm}; FLOP floor of one epoch "
        f"(pipeline's real tokens, forward + backward): {result['floor_epoch_s']:.2f} s.",
        "",
        "| ratio (median of per-repetition ratios) | value |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    lines += [
        f"| test accuracy, pipeline - tutorial (points) | {result['accuracy_gap_points']:+.2f} |",
        "",
        "| target | met |",
        "|---|---|",
    ]
    lines += [f"| {k} | {'yes' if v else 'NO'} |" for k, v in result["targets"].items()]
    return "\n".join(lines) + "\n"


def log_to_mlflow(result: Dict[str, Any], files: List[Path], uri: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("benchmarks")
    with mlflow.start_run(run_name="lstm_speed") as run:
        mlflow.log_params({"train": result["train"], "epochs": result["epochs"], "repeats": result["repeats"]})
        for name, r in result["variants"].items():
            mlflow.log_metrics({f"{name}.real_tokens_per_s": r["real_tokens_per_s"], f"{name}.epoch_s": r["epoch_s"],
                                f"{name}.test_accuracy": r["test_accuracy"]})
        mlflow.log_metrics({k.replace("/", "_over_"): v for k, v in result["ratios"].items()})
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=str(DATA / "sst2" / "stsa.binary.train"))
    parser.add_argument("--dev", default=str(DATA / "sst2" / "stsa.binary.dev"))
    parser.add_argument("--test", default=str(DATA / "sst2" / "stsa.binary.test"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}")
    parser.add_argument("--worker", choices=(*VARIANTS, "export_ids"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        worker(args)
        return 0
    for path in (args.train, args.dev, args.test):
        if not Path(path).is_file():
            parser.error(f"no such file: {path}")
    if args.repeats < 1 or args.epochs < 2:
        parser.error("need --repeats >= 1 and --epochs >= 2 (the first epoch is reported apart)")

    runs: Dict[str, List[Dict[str, Any]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        ids = str(Path(tmp) / "ids.npz")
        for rep in range(args.repeats):
            for variant in ("export_ids", *VARIANTS):
                if variant == "export_ids" and rep > 0:
                    continue
                command = [sys.executable, __file__, "--worker", variant, "--train", args.train, "--dev", args.dev,
                           "--test", args.test, "--epochs", str(args.epochs), "--seed", str(args.seed + rep), "--ids", ids]
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
                if done.returncode != 0 or (line is None and variant != "export_ids"):
                    sys.stderr.write(done.stderr[-3000:])
                    raise SystemExit(f"error: variant {variant} failed (exit {done.returncode})")
                if variant == "export_ids":
                    continue
                runs[variant].append(json.loads(line[len("RESULT "):]))
                epochs = ", ".join(f"{s:.2f}" for s in runs[variant][-1]["epoch_seconds"])
                print(f"rep {rep + 1}/{args.repeats} {variant:20s} epochs [{epochs}] s  "
                      f"test_acc {runs[variant][-1]['test_accuracy']:.4f}", flush=True)
    result = summarize(runs, gemm_rate(), args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "lstm_speed.md", out / "lstm_speed.json"
    md.write_text(markdown(result))
    js.write_text(json.dumps({**result, "runs": runs}, indent=2) + "\n")
    run_id = log_to_mlflow(result, [md, js], args.tracking_uri)
    print(markdown(result))
    print(f"wrote {md} and {js}; MLflow run {run_id} in experiment 'benchmarks' at {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
