"""`pipeline compare`: runs side by side, ranked by a metric, with the params that differ.

    pipeline compare SEARCH_RUN_ID          the trials of a search (ranked by trial_score)
    pipeline compare RUN_ID RUN_ID ...      these runs
    pipeline compare [--experiment NAME]    the train runs and searches of an experiment

The table goes to the terminal; the table (CSV) and a bar plot are logged to the search's
parent run, or for other comparisons to a new run tagged ``pipeline.command=compare``.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import time
from typing import List, Optional, Tuple

import pandas as pd

from pipeline import evaluate, tracking
from pipeline.usage import argument_parser
from pipeline.config import compose_train
from pipeline.errors import PipelineError
from pipeline.tuning.progress import named, number

#: Metrics shown beside the ranking metric when the runs have them.
SHOWN = ("trial_score", "val_accuracy", "val_loss", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high",
         "baseline.test_accuracy", "test_f1_macro", "test_mcc")
#: Params that differ between any two runs without saying anything about the model.
IGNORED = ("tracking.run_name",)


class CompareError(PipelineError):
    """Nothing to compare, or a metric the runs do not have."""


def _positive(text: str) -> int:
    """--top: a whole number of rows, at least 1 (argparse reports anything else in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argument_parser(
        "pipeline compare", __doc__.splitlines()[0],
        "Settings mix with the run ids, key=value in Hydra's grammar (quote a value with characters the grammar\n"
        "does not take: tracking.uri='sqlite:///my runs/mlflow.db'): tracking.uri=URI reads another store\n"
        "(default: mlruns/mlflow.db here), tracking.experiment_name=NAME another experiment.",
    )
    parser.add_argument("run_ids", nargs="*", help="a search's parent run, or several runs")
    parser.add_argument("--experiment", help="compare the train runs and searches of this experiment")
    parser.add_argument("--metric", help="rank by this metric (default: trial_score for a search's trials or trials named by id, else test_accuracy)")
    parser.add_argument("--direction", choices=("max", "min"), help="default: min for *loss*, else max")
    parser.add_argument("--top", type=_positive, default=25, help="rows to show (default 25)")
    parser.add_argument("--no-log", action="store_true", help="print only; log no table or plot")
    parser.add_argument("overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    # key=value overrides (tracking.uri=..., tracking.experiment_name=...) mix with run ids
    args = parser.parse_intermixed_args(argv)  # run ids and overrides before, between or after options
    args.overrides = [a for a in args.run_ids if "=" in a]
    named = [a for a in args.run_ids if "=" not in a]
    args.run_ids = list(dict.fromkeys(named))  # a run named twice is one run
    args.repeated = len(named) > len(args.run_ids)
    return args


def _select(uri: str, args: argparse.Namespace, experiment_name: str) -> Tuple[List[tracking.RunRecord], Optional[tracking.RunRecord], str, str]:
    """(runs, the search parent if comparing one search, metric, direction)."""
    metric, direction = args.metric, args.direction
    if len(args.run_ids) == 1:
        parent = tracking.fetch_run(uri, args.run_ids[0])
        if "sweep.id" in parent.tags:  # a Hydra sweep: its jobs, as train runs are compared
            runs = tracking.search(uri, [parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
            metric = metric or "test_accuracy"
            return runs, parent, metric, direction or _direction(metric)
        if parent.tags.get("pipeline.command") != "tune":
            twice = " (named more than once: one run)" if getattr(args, "repeated", False) else ""
            raise CompareError(f"run {parent.run_id}{twice} is not a search or a sweep; give several run ids to compare runs")
        runs = tracking.search(uri, [parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
        # the refit trained on the validation split: it has no score to rank by (the parent has its test)
        runs = _latest_attempts([r for r in runs if "refit.trial_id" not in r.tags])
        # trial_score: the trial's best epoch by the search's objective, what Keras Tuner ranks by
        metric = metric or "trial_score"
        if direction is None and metric in ("trial_score", parent.params.get("tuner.objective")):
            direction = parent.params.get("tuner.direction")  # the search's own ranking; another metric, its own way
        return runs, parent, metric, direction or _direction(metric)
    if args.run_ids:
        runs = [tracking.fetch_run(uri, run_id) for run_id in args.run_ids]
        # (an attempt cut off before its end has no trial_score: it is still a trial, ranked last)
        if metric is None and all("tuner.trial_id" in r.tags for r in runs) and any("trial_score" in r.metrics for r in runs):
            # trials (of one search, or of several): ranked as a search ranks its trials
            metric = "trial_score"
            parents = {r.parent_id for r in runs}
            if direction is None and len(parents) == 1 and None not in parents:
                direction = tracking.fetch_run(uri, parents.pop()).params.get("tuner.direction")
    else:
        name = args.experiment or experiment_name
        experiment_id = tracking.experiment_id_by_name(uri, name)
        if experiment_id is None:
            raise CompareError(f"no experiment {name!r} in the MLflow store {tracking.redact(uri)}")
        runs = [
            r for r in tracking.search(uri, [experiment_id], "attributes.status = 'FINISHED'")
            if r.tags.get("pipeline.command") in ("train", "tune")
        ]
    metric = metric or "test_accuracy"
    return runs, None, metric, direction or _direction(metric)


def _latest_attempts(runs: List[tracking.RunRecord]) -> List[tracking.RunRecord]:
    """A search's trial runs less the attempts it ran again: a trial cut off (KILLED) and run again
    when the search resumed is one trial, not two rows. A trial whose every attempt was cut off keeps
    one row (the newest: runs come newest first)."""
    kept, seen = [], set()
    live = {_label(r) for r in runs if r.status != "KILLED"}
    for run in runs:
        label = _label(run)
        if run.status == "KILLED" and (label in live or label in seen):
            continue
        seen.add(label)
        kept.append(run)
    return kept


def _params(run: tracking.RunRecord) -> dict:
    """A run's params as its model was made: a search's parent records the config it started from,
    and its final model has the best trial's values (its ``best.<key>`` tags)."""
    params = dict(run.params)
    if run.tags.get("pipeline.command") == "tune":
        params.update({k: run.tags[f"best.{k}"] for k in run.params if f"best.{k}" in run.tags})
    return params


def _metric_names(runs: List[tracking.RunRecord], most: int = 12) -> str:
    """The metrics the runs have, for an error line: those a ranking is usually by first, the
    folds' curves as one entry (``fold0-2.*``: a fold-scored trial has six per fold)."""
    names = {m for r in runs for m in r.metrics}
    folds = sorted({int(m[4:m.index(".")]) for m in names if re.match(r"fold\d+\.", m)})
    plain = sorted(names - {m for m in names if re.match(r"fold\d+\.", m)}, key=lambda m: (m not in SHOWN, m))
    listed = plain[:most] + ([f"... {len(plain) - most} more"] if len(plain) > most else [])
    if folds:
        listed.append(f"fold{folds[0]}-{folds[-1]}.*" if len(folds) > 1 else f"fold{folds[0]}.*")
    return ", ".join(listed)


def _direction(metric: str) -> str:
    return "min" if "loss" in metric else "max"


def _label(run: tracking.RunRecord) -> str:
    if "seed_variance.trial_id" in run.tags:
        return f"trial {number(run.tags['seed_variance.trial_id'])} seed {run.tags['seed_variance.seed']}"
    if "ensemble.trial_id" in run.tags:
        return f"trial {number(run.tags['ensemble.trial_id'])} seed {run.tags['ensemble.seed']} (ensemble)"
    trial = run.tags.get("tuner.trial_id")
    return named(trial) if trial is not None else (run.name or run.run_id[:8])


def table(runs: List[tracking.RunRecord], metric: str, direction: str) -> pd.DataFrame:
    """One row per run, ranked by ``metric``: status, the shown metrics, the params that differ."""
    params = {r.run_id: _params(r) for r in runs}
    keys = sorted({k for r in runs for k in params[r.run_id]} - set(IGNORED))
    differing = [k for k in keys if len({params[r.run_id].get(k) for r in runs}) > 1]
    rows = []
    # ties keep trial order (earlier trial first): a search's own ranking breaks a tie between its
    # trials by their models' weight count (tuner.ties), which the runs do not record; the parent's
    # best_trial_id tag names the trial it called best
    for run in sorted(runs, key=lambda r: int(r.tags.get("tuner.trial_id", "0") or 0) if r.tags.get("tuner.trial_id", "").isdigit() else 0):
        row = {"run_id": run.run_id, "run": _label(run), "status": run.status, metric: run.metrics.get(metric, math.nan)}
        row.update({m: run.metrics[m] for m in SHOWN if m != metric and m in run.metrics})
        row.update({k.removeprefix("hp."): params[run.run_id].get(k, "") for k in differing})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.sort_values(metric, ascending=direction == "min", na_position="last", kind="stable")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def terminal_view(frame: pd.DataFrame, fixed: int, width: int) -> Tuple[pd.DataFrame, List[str]]:
    """What of ``frame`` (:func:`table`'s: its first ``fixed`` columns the run and its metrics, the
    rest the params that differ) fits a terminal ``width`` characters wide, and a line for each
    kind of param left out. A param that only some of the runs have (a search's ``tuner.*`` and
    ``search_space.*`` beside a train run, Keras's ``optimizer_*`` on a train run) says what kind
    of run each is, not how their settings differ: those are named by prefix under the table; then
    the params the runs all have, from the right, until the table fits. The logged CSV has every
    column."""
    params = list(frame.columns[fixed:])
    some = [k for k in params if (frame[k].astype(str) == "").any()]
    kept = [k for k in params if k not in some]
    view = frame[list(frame.columns[:fixed]) + kept]
    dropped: List[str] = []
    while kept and max(len(line) for line in view.to_string(index=False).splitlines()) > width:
        dropped.insert(0, kept.pop())
        view = frame[list(frame.columns[:fixed]) + kept]
    notes = []
    if some:
        notes.append(f"also differ, set on only some of these runs: {_grouped(some)}")
    if dropped:
        notes.append(f"also differ, left out to fit {width} columns: {_grouped(dropped)}")
    return view, notes


def _grouped(names: List[str]) -> str:
    """Param names by prefix: ``optimizer_* (14), search_space.* (4), seed``."""
    groups: dict = {}
    for name in names:
        cut = name.find(".") if "." in name else name.find("_") if "_" in name else len(name)
        groups.setdefault(name[:cut + 1] + "*" if cut < len(name) else name, []).append(name)
    return ", ".join(members[0] if len(members) == 1 else f"{prefix} ({len(members)})" for prefix, members in groups.items())


def lead(ranked: pd.DataFrame, runs: List[tracking.RunRecord], metric: str) -> str:
    """The line under the table: the best run and its lead over the next, and whether that lead
    says anything. Test scores from different test splits (``data_fingerprint.test``: another
    dataset, split seed or sample) do not rank runs; and where the next run's test accuracy lies
    inside the best's 95% interval, the test split cannot tell the two apart."""
    best, runner_up = ranked.iloc[0], ranked.iloc[1]
    score, gap = float(best[metric]), abs(float(best[metric]) - float(runner_up[metric]))
    line = f"best: {best['run']} ({metric}={score:.4f}, {gap:.4f} ahead of the next"
    if not metric.startswith("test_"):
        return line + ")"
    shown = set(ranked["run_id"])
    splits = {r.tags.get("data_fingerprint.test") for r in runs if r.run_id in shown} - {None}  # older runs: unknown
    if len(splits) > 1:
        return line + f"); but these runs were tested on {len(splits)} different test splits, so their test scores do not rank them"
    low, high = best.get("test_accuracy_ci_low"), best.get("test_accuracy_ci_high")
    if metric != "test_accuracy" or low is None or high is None or pd.isna(low) or pd.isna(high):
        return line + ")"
    inside = float(low) <= float(runner_up[metric]) <= float(high)
    return line + (f", inside its 95% interval [{float(low):.4f}, {float(high):.4f}]: no difference this test split can show)" if inside
                   else f", outside its 95% interval [{float(low):.4f}, {float(high):.4f}])")


def main(argv: List[str]) -> int:
    args = _parse(argv)
    cfg = compose_train([o for o in args.overrides])
    uri = str(cfg.tracking.uri)
    tracking.preflight(cfg.tracking, create=False)  # reading creates no store
    runs, parent, metric, direction = _select(uri, args, str(cfg.tracking.experiment_name))
    if not runs:
        raise CompareError("no runs to compare")
    if not any(metric in r.metrics for r in runs):
        raise CompareError(f"none of these runs logged {metric!r}; they have: {_metric_names(runs)}")
    frame = table(runs, metric, direction)
    head = frame.head(args.top)
    # the run and its metrics, its id's first 8 characters (the full id is in the logged CSV), the params
    leading = ["rank", "run", "status", metric] + [m for m in SHOWN if m != metric and m in frame.columns]
    shown = head.assign(run_id=head["run_id"].str[:8])
    shown = shown[leading + ["run_id"] + [c for c in shown.columns if c not in leading and c != "run_id"]]
    with pd.option_context("display.float_format", "{:.4f}".format):
        view, notes = terminal_view(shown, len(leading) + 1, max(80, shutil.get_terminal_size((200, 24)).columns))
        print(view.to_string(index=False))
    if len(frame) > args.top:
        print(f"... {len(frame) - args.top} more (--top N)")
    for note in notes:
        print(note + ("" if args.no_log else " (every column is in the logged compare/runs.csv)"))
    ranked = frame[frame[metric].notna()]
    if len(ranked) >= 2:
        print(lead(ranked, runs, metric))
    if args.no_log:
        return 0
    top = ranked.head(args.top)
    figure = evaluate.plot_comparison(list(top["run"]), [float(v) for v in top[metric]], metric)
    if parent is not None:
        tracking.attach(uri, parent.run_id, frame, "compare/runs.csv", figure, "compare/comparison.png")
        print(f"logged compare/runs.csv and compare/comparison.png to {'sweep' if 'sweep.id' in parent.tags else 'search'} {parent.run_id}")
        return 0
    tags = {"pipeline.command": "compare", **tracking.process_tag(), "compared_runs": ",".join(frame["run_id"])[:5000], "compare.metric": metric}
    with tracking.tracked_run(cfg.tracking, f"compare-{time.strftime('%Y%m%d-%H%M%S')}", tags) as active:
        tracking.log_table(frame, "compare/runs.csv")
        tracking.log_figure(figure, "compare/comparison.png")
    print(f"logged the comparison to run {active.info.run_id}")
    return 0
