"""Whether a refit that may not have trained should be trained again with another seed: played on validation data.

    python bench/refit_retry.py [--datasets bbc_news] [--epochs 4] [--seeds 1 2 ... 12] \
        [--split-seed 42] [--json FILE] [-- OVERRIDE ...]

A search's final model averages three refits (its best configuration trained on train+validation
for the epoch count its trial found best, seeds s, s+1, s+2); nothing is held out to check them, so
the pipeline compares each refit's training accuracy after its last epoch with the other members'
(`pipeline.tuning.final.untrained`). This plays the same fits with the validation split held out:
the configuration (the defaults with the overrides after `--`) trained on the training split of
`--split-seed`'s split for exactly E epochs, once per seed, then the validation split scored once.
The test split is never read; no MLflow run is opened.

Prints one row per fit (its training accuracy after its last epoch and its validation accuracy),
then one row per window of three consecutive seeds with two more after it (so that two named members
can both be replaced; the first ten of twelve seeds): the validation accuracy of the three models
averaged with none replaced (`tuner.final.retrain_untrained=false`), and of the same average with
each member that `untrained` names replaced by a fit with the next seed after the window (the
default since 2026-11-27; the replacement's own training accuracy is not checked again, as in a
search), and which members were named. `--json` keeps every fit's figures and
probabilities for other policies.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[4])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 13)))
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--json", default=None, help="write every fit's figures and probabilities here")
    parser.add_argument("overrides", nargs="*", help="more overrides for every fit (after --)")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from pipeline import experiment
    from pipeline.config import compose_train
    from pipeline.model import build_model, class_probabilities
    from pipeline.tuning.final import untrained

    kept = []
    for dataset in args.datasets:
        for epochs in args.epochs:
            fits = []
            print(f"\n{dataset}, {epochs} epoch(s), split {args.split_seed}, {' '.join(args.overrides) or 'defaults'}")
            print("| seed | training accuracy after the last epoch | val accuracy | seconds |\n|---|---|---|---|")
            for seed in args.seeds:
                cfg = compose_train([f"dataset={dataset}", f"seed={seed}", f"dataset.split_seed={args.split_seed}",
                                     "training.verbose=0", "training.early_stopping.enabled=false",
                                     f"training.epochs={epochs}", *args.overrides])
                experiment.seed_everything(seed, cfg.training.deterministic)
                prepared = experiment.prepare(cfg)
                start = time.perf_counter()
                model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
                history = experiment.fit(model, prepared, cfg.training, seed)
                x_val, y_val = prepared.encoded["val"]
                probabilities = class_probabilities(model, x_val)
                fit = {"seed": seed, "accuracy": float(history.history["accuracy"][-1]),
                       "val_accuracy": float(np.mean(probabilities.argmax(1) == y_val)), "probabilities": probabilities}
                fits.append(fit)
                print(f"| {seed} | {fit['accuracy']:.4f} | {fit['val_accuracy']:.4f} | {time.perf_counter() - start:.0f} |", flush=True)

            def accuracy(members: list) -> float:
                return float(np.mean(np.mean([m["probabilities"] for m in members], axis=0).argmax(1) == y_val))

            print("| seeds | 3 averaged, none replaced | named members retrained with the next seed | named (seeds) |\n|---|---|---|---|")
            means = []
            for k in range(len(fits) - 4):  # windows with two seeds after them: any two members can be replaced
                window, spare = fits[k:k + 3], iter(fits[k + 3:])
                named = {k for k, _ in untrained(pd.DataFrame({"member": [f"seed {m['seed']}" for m in window],
                                                               "accuracy": [m["accuracy"] for m in window]}))}
                retried = [next(spare, m) if k in named else m for k, m in enumerate(window)]
                print(f"| {' '.join(str(m['seed']) for m in window)} | {accuracy(window):.4f} | {accuracy(retried):.4f} "
                      f"| {', '.join(str(window[k]['seed']) for k in sorted(named)) or '-'} |", flush=True)
                means.append((accuracy(window), accuracy(retried)))
            kept_mean, retried_mean = np.mean(means, axis=0)
            print(f"| mean of the {len(means)} windows | {kept_mean:.4f} | {retried_mean:.4f} ({100 * (retried_mean - kept_mean):+.2f} points) | |", flush=True)
            kept.append({"dataset": dataset, "epochs": epochs, "overrides": args.overrides, "labels": y_val.tolist(),
                         "fits": [{**f, "probabilities": f["probabilities"].tolist()} for f in fits]})
    if args.json:
        with open(args.json, "w") as out:
            json.dump(kept, out)


if __name__ == "__main__":
    main()
