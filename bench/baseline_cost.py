"""What the TF-IDF + logistic regression baseline costs and scores on each dataset's own splits.

    python bench/baseline_cost.py [--datasets bbc_news sst2 mr subj sst2_phrases]
    python bench/baseline_cost.py --beside [--datasets bbc_news] [--repeats 3]

The first prints one row per dataset: split sizes, the C chosen on validation, validation and test
accuracy, and the seconds the fit took (vectorize, one fit per C, score), median of --repeats runs.

``--beside`` measures what a job pays for it, as a search runs it (``baseline.start``: the
vocabularies fit before the run opens, the classifiers and the file to log beside the training),
against fitting it first as it used to be (``baseline.fit``, then the skops file). Each repetition,
in one process, side by side: the old way alone; the training alone (the dataset's default model,
``--epochs`` epochs, no early stopping: the same work each time, a stand-in for a search's first
trial); and the baseline started, the same training, then waited for. Its cost is the last minus
the training alone. Medians over --repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beside", action="store_true", help="what a job pays for it, fit beside its training")
    parser.add_argument("--epochs", type=int, default=2, help="the training's epochs, with --beside")
    args = parser.parse_args()
    if args.beside:
        beside(args.datasets or ["bbc_news"], args.repeats, args.epochs)
        return

    from pipeline import baseline, data
    from pipeline.config import compose_train

    print("| dataset | train / val / test | C | val accuracy | test accuracy | seconds (median) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets or ["bbc_news", "sst2", "mr", "subj", "sst2_phrases"]:
        cfg = compose_train([f"dataset={name}"], config_name="tune")
        splits = data.load_splits(cfg.dataset, cfg.seed)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fitted = baseline.fit(splits, cfg.baseline)
            seconds.append(time.perf_counter() - start)
        sizes = f"{len(splits.train)} / {len(splits.val)} / {len(splits.test)}"
        print(f"| {name} | {sizes} | {fitted.C:g} | {fitted.val_accuracy:.4f} | {fitted.test['accuracy']:.4f} | {statistics.median(seconds):.1f} |",
              flush=True)


def beside(datasets: list, repeats: int, epochs: int) -> None:
    from pipeline import baseline, data, experiment, tracking
    from pipeline.config import compose_train
    from pipeline.model import build_model

    print(f"| dataset | first, then the file (before) | started: before the run | training alone ({epochs} epochs) "
          "| started + training + waited | cost beside (now) | now / before |")
    print("|---|---|---|---|---|---|---|")
    for name in datasets:
        cfg = compose_train([f"dataset={name}", f"training.epochs={epochs}", "training.early_stopping.enabled=false",
                             "training.verbose=0"], config_name="tune")
        splits = data.load_splits(cfg.dataset, cfg.seed)
        prepared = experiment.prepare(cfg, splits)

        def train() -> None:
            experiment.seed_everything(cfg.seed, cfg.training.deterministic)
            model = build_model(cfg, prepared.shape)
            experiment.fit(model, prepared, cfg.training, cfg.seed)

        train()  # TensorFlow's first trace, paid once by any job
        rows: dict = {"before": [], "start": [], "alone": [], "together": [], "cost": [], "ratio": []}
        for _ in range(repeats):
            t = time.perf_counter()
            tracking.skops_file(baseline.fit(splits, cfg.baseline).model)
            rows["before"].append(time.perf_counter() - t)
            t = time.perf_counter()
            train()
            rows["alone"].append(time.perf_counter() - t)
            t = time.perf_counter()
            pending = baseline.start(splits, cfg.baseline, file=tracking.skops_file)
            rows["start"].append(time.perf_counter() - t)
            train()
            pending.result()
            rows["together"].append(time.perf_counter() - t)
            rows["cost"].append(rows["together"][-1] - rows["alone"][-1])
            rows["ratio"].append(rows["cost"][-1] / rows["before"][-1])
        m = {k: statistics.median(v) for k, v in rows.items()}
        print(f"| {name} | {m['before']:.1f} s | {m['start']:.1f} s | {m['alone']:.1f} s | {m['together']:.1f} s "
              f"| **{m['cost']:.1f} s** | {m['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
