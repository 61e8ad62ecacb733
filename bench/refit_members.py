"""Whether the best trial's own model belongs in the final model's average: a search's end, played inside the training split.

    python bench/refit_members.py [--datasets bbc_news sst2 mr subj] [--seeds 1 2 3] [--split-seed 1] \
        [-- OVERRIDE ...]

A search's final model is the mean of three refits (its best configuration trained again on
train+validation for the epoch count its trial found best, with the search's seed and the two
after it); the best trial's own model, trained on the training split alone and stopped early on
the validation split, is left out. Scoring it on the validation split would flatter it (that split
chose it), so this plays the search one level down: the training split (of `--split-seed`'s split)
is split again, stratified, into an inner training split and an inner validation split of the
validation split's share; the real validation split stands in for the test split and is read once
per model. Per seed s: the "trial" (the configuration after `--`, the defaults otherwise, trained
on the inner training split with early stopping on the inner validation split), then refits with
seeds s, s+1 and s+2 on the inner training and validation splits for the trial's best epoch count
(its highest validation accuracy, as Keras Tuner's best step). Prints, per dataset and seed, the
accuracy of: the trial alone; refits s and s+1 averaged, without and with the trial; refits s, s+1
and s+2 averaged (the final model today), without and with the trial; and the medians over seeds.
The test split is never read. No MLflow run is opened.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLUMNS = ["trial alone", "2 refits", "2 refits + trial", "3 refits (today)", "3 refits + trial"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["bbc_news", "sst2", "mr", "subj"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--split-seed", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="more overrides for every fit (after --)")
    args = parser.parse_args()

    import numpy as np
    from sklearn.model_selection import train_test_split

    from pipeline import data, experiment
    from pipeline.config import compose_train
    from pipeline.model import build_model, class_probabilities

    print(f"| dataset | seed | epochs | {' | '.join(COLUMNS)} | seconds |")
    print(f"|---|---|---|{'---|' * len(COLUMNS)}---|")
    for dataset in args.datasets:
        base = [f"dataset={dataset}", f"dataset.split_seed={args.split_seed}", "training.verbose=0", *args.overrides]
        outer = data.load_splits(compose_train(base).dataset, args.split_seed)
        share = len(outer.val) / (len(outer.train) + len(outer.val))
        texts, held, labels, held_labels = train_test_split(outer.train.texts, outer.train.labels, test_size=share,
                                                            stratify=outer.train.labels, random_state=args.split_seed)
        inner = data.Splits(data.Split(list(texts), list(labels)), data.Split(list(held), list(held_labels)), outer.val, outer.classes)
        rows = []
        for seed in args.seeds:
            start = time.perf_counter()
            cfg = compose_train([*base, f"seed={seed}"])
            experiment.seed_everything(seed, cfg.training.deterministic)
            prepared = experiment.prepare(cfg, inner)
            x_test, y_test = prepared.encoded["test"]  # the real validation split
            trial = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
            history = experiment.fit(trial, prepared, cfg.training, seed)
            epochs = int(np.argmax(history.history["val_accuracy"])) + 1
            probabilities = [class_probabilities(trial, x_test)]
            for refit_seed in (seed, seed + 1, seed + 2):
                refit_cfg = compose_train([*base, f"seed={refit_seed}", "training.fit_on=train_val", f"training.epochs={epochs}"])
                experiment.seed_everything(refit_seed, refit_cfg.training.deterministic)
                refit = build_model(refit_cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(refit_cfg))
                experiment.fit(refit, prepared, refit_cfg.training, refit_seed)
                probabilities.append(class_probabilities(refit, x_test))

            def accuracy(members: list) -> float:
                return float(np.mean(np.mean([probabilities[m] for m in members], axis=0).argmax(1) == y_test))

            row = [accuracy([0]), accuracy([1, 2]), accuracy([0, 1, 2]), accuracy([1, 2, 3]), accuracy([0, 1, 2, 3])]
            rows.append(row)
            print(f"| {dataset} | {seed} | {epochs} | {' | '.join(f'{a:.4f}' for a in row)} | {time.perf_counter() - start:.0f} |", flush=True)
        medians = [statistics.median(r[i] for r in rows) for i in range(len(COLUMNS))]
        print(f"| {dataset} | median | | {' | '.join(f'**{a:.4f}**' for a in medians)} | |", flush=True)


if __name__ == "__main__":
    main()
