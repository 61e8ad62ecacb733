"""Validation accuracy of candidate defaults, side by side: how the README's defaults were chosen.

    python bench/defaults.py [--datasets bbc_news sst2 mr subj] [--seeds 1 2] \
        [--variant NAME=override,override ...]

Each variant is a list of `pipeline train` overrides. Every (dataset, variant, seed) trains one
model with the pipeline's own prepare / build / fit (early stopping on validation, best weights
restored) and is scored on the validation split only: the test split is never read here, so a
default chosen from this table has not seen it. No MLflow run is opened. Prints one row per
(dataset, variant): the median and the spread of validation accuracy over the seeds, the epochs
trained and the seconds per fit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {
    "today": [],
    "max": ["model.pooling=max"],
    "mean": ["model.pooling=mean"],
    "bi_max": ["model.bidirectional=true", "model.pooling=max"],
}


def _parse(specs: list) -> dict:
    if not specs:
        return VARIANTS
    out = {}
    for spec in specs:
        name, _, overrides = spec.partition("=")
        out[name] = [o for o in overrides.split(",") if o]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "sst2", "mr", "subj"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--variant", nargs="*", default=[], help="NAME=override,override (default: the built-in set)")
    args = parser.parse_args()
    variants = _parse(args.variant)

    from pipeline import experiment
    from pipeline.config import compose_train

    print("| dataset | variant | val accuracy (median) | min - max | epochs | seconds per fit |")
    print("|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for name, overrides in variants.items():
            scores, epochs, seconds = [], [], []
            for seed in args.seeds:
                cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0", *overrides])
                experiment.seed_everything(seed, cfg.training.deterministic)
                score, trained, took = fit_and_score(cfg, seed)
                scores.append(score)
                epochs.append(trained)
                seconds.append(took)
            print(row(dataset, name, scores, epochs, seconds), flush=True)


def fit_and_score(cfg, seed: int) -> tuple:  # type: ignore[no-untyped-def]
    """(validation accuracy, epochs trained, seconds) of the pipeline's own prepare / build / fit
    of ``cfg`` (seeded by the caller); the test split is not read."""
    from pipeline import experiment
    from pipeline.model import build_model

    prepared = experiment.prepare(cfg)
    start = time.perf_counter()
    model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
    history = experiment.fit(model, prepared, cfg.training, seed)
    x_val, y_val = prepared.encoded["val"]
    score = float(model.evaluate(x_val, y_val, batch_size=256, verbose=0, return_dict=True)["accuracy"])
    return score, len(history.history["loss"]), time.perf_counter() - start


def interleaved(datasets: list, seeds: list, variants: list, patch) -> None:  # type: ignore[no-untyped-def]
    """Print the table of ``variants`` that are not settings: per dataset and seed, each variant in
    turn (``patch(name)`` sets this process up for it), so that the machine's hour falls on each
    alike; then a row per variant."""
    from pipeline import experiment
    from pipeline.config import compose_train

    print("| dataset | variant | val accuracy (median) | min - max | epochs | seconds per fit |")
    print("|---|---|---|---|---|---|")
    for dataset in datasets:
        results: dict = {name: ([], [], []) for name in variants}
        for seed in seeds:
            for name in variants:
                patch(name)
                scores, epochs, seconds = results[name]
                cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0"])
                experiment.seed_everything(seed, cfg.training.deterministic)
                score, trained, took = fit_and_score(cfg, seed)  # builds through the patched modules
                scores.append(score)
                epochs.append(trained)
                seconds.append(took)
        for name in variants:
            print(row(dataset, name, *results[name]), flush=True)


def interleaved_main(description: str, variants: list, patch, setup) -> None:  # type: ignore[no-untyped-def]
    """The command line of a script whose variants are not settings (``--datasets``, ``--seeds``,
    ``--variants``, ``variants`` the default), then ``setup()`` (after the arguments are read, so
    that ``--help`` and a usage error come before TensorFlow loads) and its ``interleaved`` table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "mr", "subj", "bbc_news"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=variants)
    args = parser.parse_args()
    setup()
    interleaved(args.datasets, args.seeds, args.variants, patch)


def run_patched() -> None:
    """This script's own command line (``--variant``, ``--datasets``, ``--seeds``), run in the calling
    process after it has patched the pipeline there: the script of a change that is not a setting."""
    import runpy

    sys.argv = [__file__, *sys.argv[1:]]
    runpy.run_path(__file__, run_name="__main__")


def row(dataset: str, name: str, scores: list, epochs: list, seconds: list) -> str:
    """One table row: median and range of validation accuracy, median epochs and seconds per fit."""
    return (f"| {dataset} | {name} | {statistics.median(scores):.4f} | {min(scores):.4f} - {max(scores):.4f} "
            f"| {statistics.median(epochs):g} | {statistics.median(seconds):.0f} |")


if __name__ == "__main__":
    main()
