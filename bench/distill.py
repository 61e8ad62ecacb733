"""The LSTM trained on the baseline's soft labels (distillation, ``training.distill``), played on validation data.

    python bench/distill.py [--datasets mr] [--seeds 1 2 3] [--alphas 1.0 0.5 0.0] [-- OVERRIDE ...]

For each (dataset, seed) and alpha: the pipeline's own model trained as ``pipeline train
dataset=D seed=S training.distill.alpha=A`` trains it (``pipeline/distill.py``: targets ``alpha``
x the label + (1 - alpha) x the TF-IDF baseline's out-of-fold probabilities over the training
split; 1.0: the label alone), with early stopping on the validation split's true labels, and
scored on the validation split. The test split is never read. Prints one row per (dataset,
alpha): the median and range of validation accuracy over the seeds, each seed's, the median
epochs and seconds per fit (the teacher's included, once per dataset and seed), and the
teacher's out-of-fold accuracy on the training split per seed. README "How the defaults were
chosen".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--alphas", nargs="+", type=float, default=[1.0, 0.5, 0.0])
    parser.add_argument("overrides", nargs="*", help="more overrides for every fit (after --)")
    args = parser.parse_args()

    import numpy as np

    from pipeline import experiment
    from pipeline.config import compose_train
    from pipeline.model import build_model, class_probabilities

    print("| dataset | alpha | val accuracy (median) | min - max | per seed | epochs | seconds per fit "
          "| teacher: out-of-fold accuracy on train, per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        results = {alpha: ([], [], []) for alpha in args.alphas}
        teachers = {}
        for seed in args.seeds:
            for alpha in args.alphas:
                cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0",
                                     f"training.distill.alpha={alpha}", *args.overrides])
                experiment.seed_everything(seed, cfg.training.deterministic)
                prepared = experiment.prepare(cfg)
                start = time.perf_counter()
                teacher = prepared.teacher(cfg.training)
                if teacher is not None:
                    teachers[seed] = f"{np.mean(teacher.argmax(1) == prepared.encoded['train'][1]):.4f}"
                model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
                history = experiment.fit(model, prepared, cfg.training, seed)
                x_val, y_val = prepared.encoded["val"]
                accuracy = float(np.mean(class_probabilities(model, x_val).argmax(1) == y_val))
                for out, value in zip(results[alpha], (accuracy, len(history.history["loss"]), time.perf_counter() - start)):
                    out.append(value)
        for alpha, (scores, epochs, seconds) in results.items():
            print(f"| {dataset} | {alpha:g} | {statistics.median(scores):.4f} | {min(scores):.4f} - {max(scores):.4f} "
                  f"| {' / '.join(f'{s:.4f}' for s in scores)} | {statistics.median(epochs):g} | {statistics.median(seconds):.0f} "
                  f"| {'; '.join(teachers.values())} |", flush=True)


if __name__ == "__main__":
    main()
