"""What tracking and the choice of tuner cost a search, on SST-2.

1. Tracking overhead: the same 10-trial random search (SST-2, 2 epochs per trial) with every
   trial an MLflow child run under a parent (as `pipeline tune` runs it), and untracked (the
   same Keras Tuner, hypermodel, data and per-trial reseeding, no MLflow). Each search runs in
   its own process, the two interleaved over --repeats repetitions; the time is the wall time
   of the trials (tuner.search), the median per variant and the median of per-repetition ratios.
2. Hyperband versus random search: `pipeline tune` on SST-2 with each tuner over the default
   search space (units x embedding size), then, from the trials' MLflow runs, the epochs each
   spent until a trial came within 0.5 points of the best validation accuracy either found.

Writes bench/results/search_cost.{md,json} and logs both to MLflow.

    python bench/search_cost.py [--repeats 5] [--trials 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PIPELINE_DATA_DIR", ROOT.parent / "shared" / "data"))
WITHIN = 0.005  # 0.5 points of accuracy


def _overrides(tmp: str, args: argparse.Namespace) -> List[str]:
    return [
        "dataset=sst2",
        f"paths.data_dir={DATA}",
        f"paths.mlruns_dir={tmp}/mlruns",
        f"tuner.directory={tmp}/tuner",
        f"tuner.max_trials={args.trials}",
        f"training.epochs={args.epochs}",
        "training.verbose=0",
        "tracking.log_model=false",
    ]


def overhead_worker(args: argparse.Namespace) -> None:
    """One search, tracked or not; prints the trials' wall time."""
    from pipeline import config, experiment, tracking
    from pipeline.tuning import project as search_project
    from pipeline.tuning import tuners

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.compose_train(_overrides(tmp, args), config_name="tune")
        hp = tuners.validate(cfg)
        experiment.seed_everything(cfg.seed, cfg.training.deterministic)
        prepared = experiment.prepare(cfg)
        project = search_project.resolve_project(cfg, search_project.search_identity(cfg, prepared.splits.fingerprint()["all"]))
        tracked = args.worker == "tracked"
        if tracked:
            tracking.preflight(cfg.tracking)
        with tracking.tracked_run(cfg.tracking, "search-cost", {}) if tracked else contextlib.nullcontext() as parent:
            tuner = tuners.make_tuner(cfg, prepared, project, parent.info.run_id if tracked else None, hp)
            start = time.perf_counter()
            tuner.search(verbose=0)
            seconds = time.perf_counter() - start
        completed = sum(1 for t in tuner.oracle.trials.values() if str(t.status) == "COMPLETED")
    print("RESULT " + json.dumps({"seconds": seconds, "completed": completed}), flush=True)


def _run(command: List[str], what: str, cwd: Path = ROOT) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"error: {what} failed (exit {done.returncode})")
    return done.stdout


def measure_overhead(args: argparse.Namespace) -> Dict[str, Any]:
    runs: Dict[str, List[float]] = {"tracked": [], "untracked": []}
    for rep in range(args.repeats):
        for variant in ("tracked", "untracked") if rep % 2 == 0 else ("untracked", "tracked"):
            out = _run([sys.executable, __file__, "--worker", variant, "--trials", str(args.trials),
                        "--epochs", str(args.epochs)], f"{variant} search")
            result = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[len("RESULT "):])
            if result["completed"] != args.trials:
                raise SystemExit(f"error: {variant} search completed {result['completed']} of {args.trials} trials")
            runs[variant].append(result["seconds"])
            print(f"rep {rep + 1}/{args.repeats} {variant:9s} {result['seconds']:.1f} s", flush=True)
    ratios = [t / u for t, u in zip(runs["tracked"], runs["untracked"])]
    return {
        "trials": args.trials,
        "epochs_per_trial": args.epochs,
        "tracked_s": round(statistics.median(runs["tracked"]), 2),
        "untracked_s": round(statistics.median(runs["untracked"]), 2),
        "overhead": round(statistics.median(ratios) - 1.0, 4),
        "tracked_s_all": [round(s, 2) for s in runs["tracked"]],
        "untracked_s_all": [round(s, 2) for s in runs["untracked"]],
    }


def _search_trials(uri: str) -> List[Dict[str, Any]]:
    """Each trial run of the one search in this store, in start order: epochs and val_accuracy per epoch."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lstm-text-classification")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`tuner.trial_id` != ''", max_results=1000)
    trials = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: m.step)]
        trials.append({"trial_id": run.data.tags["tuner.trial_id"], "status": run.info.status, "val_accuracy": history})
    return trials


def compare_tuners(args: argparse.Namespace) -> Dict[str, Any]:
    searches: Dict[str, Any] = {}
    for name in ("random", "hyperband"):
        with tempfile.TemporaryDirectory() as tmp:
            overrides = _overrides(tmp, args)
            overrides = [o for o in overrides if not o.startswith(("tuner.max_trials", "training.epochs"))]
            overrides += [f"tuner={name}", f"training.epochs={args.tuner_epochs}", f"tuner.max_trials={args.trials}"]
            start = time.perf_counter()
            _run([sys.executable, "-m", "pipeline.cli", "tune", *overrides], f"{name} search", cwd=Path(tmp))
            seconds = time.perf_counter() - start
            trials = _search_trials(f"sqlite:///{tmp}/mlruns/mlflow.db")
        searches[name] = {"trials": trials, "wall_s": round(seconds, 1)}
        print(f"{name}: {len(trials)} trials, {sum(len(t['val_accuracy']) for t in trials)} epochs, {seconds:.0f} s", flush=True)
    best = max(v for s in searches.values() for t in s["trials"] for v in t["val_accuracy"])
    target = best - WITHIN
    rows = {}
    for name, search in searches.items():
        spent, reached = 0, None
        for trial in search["trials"]:
            for value in trial["val_accuracy"]:
                spent += 1
                if reached is None and value >= target - 1e-9:
                    reached = spent
        rows[name] = {
            "trials": len(search["trials"]),
            "epochs_total": spent,
            "best_val_accuracy": round(max(v for t in search["trials"] for v in t["val_accuracy"]), 4),
            "epochs_to_within_0.5": reached,
            "wall_s": search["wall_s"],
        }
    return {"best_val_accuracy": round(best, 4), "target": round(target, 4), "max_epochs": args.tuner_epochs, "tuners": rows}


def markdown(result: Dict[str, Any]) -> str:
    o, t = result["overhead"], result["tuners"]
    lines = [
        "# Search cost (bench/search_cost.py)",
        "",
        f"## Tracking overhead: {o['trials']}-trial random search on SST-2, {o['epochs_per_trial']} epochs per trial, "
        f"{len(o['tracked_s_all'])} repetitions interleaved",
        "",
        "| variant | trials wall s (median) | per repetition |",
        "|---|---:|---|",
        f"| tracked (MLflow parent + a child run per trial) | {o['tracked_s']:.1f} | {', '.join(map(str, o['tracked_s_all']))} |",
        f"| untracked (the same tuner, no MLflow) | {o['untracked_s']:.1f} | {', '.join(map(str, o['untracked_s_all']))} |",
        "",
        f"Tracking overhead (median of per-repetition ratios - 1): **{o['overhead']:+.1%}** (target at most +3%).",
        "",
        f"## Hyperband versus random search on SST-2 (default search space, up to {t['max_epochs']} epochs a trial)",
        "",
        f"Best validation accuracy either found: {t['best_val_accuracy']:.4f}; target within 0.5 points: {t['target']:.4f}.",
        "",
        "| tuner | trials | epochs in all | best val_accuracy | epochs until within 0.5 points | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in t["tuners"].items():
        reached = r["epochs_to_within_0.5"] if r["epochs_to_within_0.5"] is not None else "never"
        lines.append(f"| {name} | {r['trials']} | {r['epochs_total']} | {r['best_val_accuracy']:.4f} | {reached} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial of the overhead searches")
    parser.add_argument("--tuner-epochs", type=int, default=6, help="epochs (Hyperband's max_epochs) of the tuner comparison")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}")
    parser.add_argument("--worker", choices=("tracked", "untracked"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        overhead_worker(args)
        return 0
    if not (DATA / "sst2" / "stsa.binary.train").is_file():
        parser.error(f"SST-2 not found under {DATA} (set PIPELINE_DATA_DIR)")
    if args.repeats < 1 or args.trials < 1:
        parser.error("need --repeats >= 1 and --trials >= 1")

    result = {"overhead": measure_overhead(args), "tuners": compare_tuners(args)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "search_cost.md", out / "search_cost.json"
    md.write_text(markdown(result))
    js.write_text(json.dumps(result, indent=2) + "\n")

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("benchmarks")
    with mlflow.start_run(run_name="search_cost") as run:
        mlflow.log_metrics({"tracking_overhead": result["overhead"]["overhead"],
                            **{f"{k}.epochs_to_within_0.5": float(v["epochs_to_within_0.5"] or -1)
                               for k, v in result["tuners"]["tuners"].items()}})
        mlflow.log_artifact(str(md))
        mlflow.log_artifact(str(js))
    print(markdown(result))
    print(f"wrote {md} and {js}; MLflow run {run.info.run_id} in experiment 'benchmarks' at {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
