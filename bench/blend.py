"""The LSTM's refits blended with the TF-IDF baseline, played on validation data.

    python bench/blend.py [--datasets sst2 mr subj bbc_news] [--seeds 1 2 3] [--split-seed 1] \
        [--weights 0.25 0.5 0.75]

A question a researcher asks once the baseline sits beside every search: would the final model do
better as the average of the LSTM and the baseline (stacking two kinds of evidence, as ensembles of
n-gram models and neural models do in the sentiment literature)? Played as `bench/refit_sim.py`
plays a refit: per seed, the pipeline's own prepare / build / fit on the training split of one
split (`dataset.split_seed`), for the epochs a search's refit would train (BBC News 4, the sentence
datasets 3) with the refit's cosine schedule and no early stopping; the seeds' class probabilities
on the validation split averaged, as the final model averages its refits. The baseline is fit on
the same training split at the `C` it chooses on that validation split (so its row is, if anything,
optimistic). Each blend is `w * LSTM + (1 - w) * baseline` over class probabilities, and `geometric`
the normalised product of the two. The test split is never read; no MLflow run is opened. Prints
one row per dataset: validation accuracy of each seed, of the averaged LSTM, of the baseline and of
each blend.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPOCHS = {"bbc_news": 4}  # the main job's refit; the sentence datasets' refits train 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["sst2", "mr", "subj", "bbc_news"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--split-seed", type=int, default=1)
    parser.add_argument("--weights", nargs="+", type=float, default=[0.25, 0.5, 0.75], help="the LSTM's share of each blend")
    args = parser.parse_args()

    import numpy as np

    from pipeline import baseline, experiment
    from pipeline.config import compose_train
    from pipeline.model import build_model, class_probabilities

    print(f"| dataset | LSTM per seed | LSTM, seeds averaged | baseline (C) | "
          f"{' | '.join(f'blend, LSTM {w:g}' for w in args.weights)} | geometric | seconds per fit |")
    print(f"|---|---|---|---|{'---|' * len(args.weights)}---|---|")
    for dataset in args.datasets:
        epochs = EPOCHS.get(dataset, 3)
        probabilities, scores, seconds = [], [], []
        for seed in args.seeds:
            cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0", f"dataset.split_seed={args.split_seed}",
                                 "training.early_stopping.enabled=false", f"training.epochs={epochs}", "training.lr_schedule=cosine"])
            experiment.seed_everything(seed, cfg.training.deterministic)
            prepared = experiment.prepare(cfg)
            start = time.perf_counter()
            model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
            experiment.fit(model, prepared, cfg.training, seed, epochs=epochs)
            x_val, y_val = prepared.encoded["val"]
            probabilities.append(class_probabilities(model, x_val))
            scores.append(float(np.mean(probabilities[-1].argmax(1) == y_val)))
            seconds.append(time.perf_counter() - start)
        splits = prepared.splits
        # the baseline's own choice: fit on train at each C, the best on validation (the test split unread)
        (words, chars), classifier, _, c = baseline._chosen(splits, cfg.baseline)
        x_val_features = baseline._hstack(words.transform(splits.val.texts), chars.transform(splits.val.texts))
        linear = baseline.per_class(classifier, classifier.predict_proba(x_val_features), prepared.shape.num_classes)
        lstm = np.mean(probabilities, axis=0)

        def accuracy(probs: np.ndarray) -> str:
            return f"{float(np.mean(probs.argmax(1) == y_val)):.4f}"

        blends = [accuracy(w * lstm + (1 - w) * linear) for w in args.weights]
        geometric = accuracy(np.log(lstm + 1e-9) + np.log(linear + 1e-9))
        print(f"| {dataset} | {' / '.join(f'{s:.4f}' for s in scores)} | {accuracy(lstm)} | {accuracy(linear)} ({c:g}) | "
              f"{' | '.join(blends)} | {geometric} | {sorted(seconds)[len(seconds) // 2]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
