"""A search's refit, played on validation data: how a learning-rate schedule ends a fixed-epoch fit.

    python bench/refit_sim.py [--datasets bbc_news mr] [--epochs 5 7] [--seeds 1 2 3] \
        [--schedules constant cosine] [--split-seed N] [-- OVERRIDE ...]

A search's final model is its best configuration trained again on train+validation for exactly the
epoch count its trial found best, with no early stopping (nothing is held out to stop on), so
nothing checks where that fit ends. This plays the same fit with the validation split held out:
the pipeline's own prepare / build / fit on the training split for exactly E epochs, then the
validation split is scored once, after the last epoch. The test split is never read. Prints one
row per (dataset, E, schedule): the median and range of validation accuracy over the seeds, each
seed's value and the seconds per fit. Overrides after `--` apply to every fit. With
`--split-seed N` (short for the override `dataset.split_seed=N`) every fit uses that seed's split (a
dataset without its own validation file is split by the seed) and only the training seed varies, as
the refits of one search do; the row then also gives the accuracy of the seeds' models averaged (the
mean of their class probabilities, as `tuner.final.ensemble.seeds` averages refits), for the first
2, 3, ... seeds in turn (the last is all of them). No MLflow run
is opened.

`--schedules cosine_steps` is not a pipeline setting: the same cosine as `cosine`, but read at every
batch (Keras's `CosineDecay` as the optimizer's learning rate, over E epochs' batches) instead of once
per epoch, so that a one-epoch refit decays too. Tried and not adopted (README "How the defaults
were chosen"). `--schedules cosine_ema` is not one either: `cosine`, with the optimizer keeping an
exponential moving average of the weights (Keras's `use_ema`, momentum `--ema-momentum`), which
replaces the weights when the fit ends; its validation accuracy is scored after that.
`--schedules cosine_horizon` is not one either: the trial's own rates, `cosine` over the search's
`training.epochs` (`--horizon`, 10) with the fit stopped after E of them, where a refit today
decays over its own E epochs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def averaged(probabilities: list, labels: Any) -> str:
    import numpy as np

    return f"{float(np.mean(np.mean(probabilities, axis=0).argmax(1) == labels)):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "mr"])
    parser.add_argument("--epochs", nargs="+", type=int, default=None,
                        help="fit lengths (default: 5 and 7 for bbc_news, 2 for the sentence datasets: their trials' best epochs)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--schedules", nargs="+", default=["constant", "cosine"])
    parser.add_argument("--split-seed", type=int, default=None,
                        help="one split for every seed, dataset.split_seed=N (default: each seed's own)")
    parser.add_argument("--ema-momentum", type=float, default=0.99, help="with --schedules cosine_ema")
    parser.add_argument("--horizon", type=int, default=10, help="with --schedules cosine_horizon: the trials' training.epochs")
    parser.add_argument("overrides", nargs="*", help="more overrides for every fit (after --)")
    args = parser.parse_args()

    import keras

    from pipeline import data, experiment
    from pipeline.config import compose_train
    from pipeline.model import build_model, class_probabilities

    print("| dataset | epochs | lr_schedule | val accuracy after the last epoch (median) | min - max | per seed "
          "| the seeds averaged (the first 2, 3, ... of them) | seconds per fit |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for epochs in args.epochs or ([5, 7] if dataset == "bbc_news" else [2]):
            for schedule in args.schedules:
                scores, seconds, probabilities = [], [], []
                for seed in args.seeds:
                    cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0",
                                         "training.early_stopping.enabled=false",
                                         f"training.epochs={args.horizon if schedule == 'cosine_horizon' else epochs}",
                                         f"training.lr_schedule={dict(cosine_steps='constant', cosine_ema='cosine', cosine_horizon='cosine').get(schedule, schedule)}",
                                         *([] if args.split_seed is None else [f"dataset.split_seed={args.split_seed}"]),
                                         *args.overrides])
                    one_split = cfg.dataset.split_seed is not None
                    experiment.seed_everything(seed, cfg.training.deterministic)
                    prepared = experiment.prepare(cfg)
                    start = time.perf_counter()
                    model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
                    if schedule == "cosine_steps":
                        steps = int(data.make_datasets({"train": prepared.encoded["train"]}, int(cfg.training.batch_size), seed,
                                                         bool(cfg.training.bucket_by_length))["train"].cardinality())
                        model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
                            float(cfg.training.learning_rate), decay_steps=epochs * steps)
                    if schedule == "cosine_ema":  # before the optimizer is built, at its first step
                        model.optimizer.use_ema, model.optimizer.ema_momentum = True, args.ema_momentum
                    history = experiment.fit(model, prepared, cfg.training, seed, epochs=epochs)
                    x_val, y_val = prepared.encoded["val"]
                    if schedule == "cosine_ema":  # the average replaced the weights as the fit ended
                        scores.append(float(model.evaluate(x_val, y_val, batch_size=256, verbose=0, return_dict=True)["accuracy"]))
                    else:
                        scores.append(float(history.history["val_accuracy"][-1]))
                    if one_split:  # the seeds' models can be averaged
                        probabilities.append(class_probabilities(model, x_val))
                    seconds.append(time.perf_counter() - start)
                print(f"| {dataset} | {epochs} | {schedule} | {statistics.median(scores):.4f} | {min(scores):.4f} - {max(scores):.4f} "
                      f"| {' / '.join(f'{s:.4f}' for s in scores)} | {' / '.join(averaged(probabilities[:k], y_val) for k in range(2, len(probabilities) + 1)) if one_split else '-'} "
                      f"| {statistics.median(seconds):.0f} |", flush=True)


if __name__ == "__main__":
    main()
