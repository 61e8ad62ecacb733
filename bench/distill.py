"""The LSTM trained on the baseline's soft labels (distillation), played on validation data.

    python bench/distill.py [--datasets mr] [--seeds 1 2 3] [--alphas 1.0 0.5 0.0] [-- OVERRIDE ...]

For each (dataset, seed): the TF-IDF baseline (``pipeline/baseline.py``) is fit on the training
split with its ``C`` chosen on validation, as a search fits it; then its out-of-fold class
probabilities for the training texts (5 stratified folds of the training split, that ``C``; the
features fit on the whole training split, which uses no label) are the teacher. Each alpha trains
the pipeline's own model on targets ``alpha`` x the label + (1 - alpha) x the teacher's
probabilities (1.0: the label alone, today's training), with early stopping on the validation
split's true labels, and is scored on the validation split. The test split is never read. Prints
one row per (dataset, alpha): the median and range of validation accuracy over the seeds, each
seed's, the median epochs and seconds per fit, and the teacher's out-of-fold accuracy on the
training split and its validation accuracy per seed. Tried and not adopted (README "How the
defaults were chosen").
"""

from __future__ import annotations

import argparse
import dataclasses
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
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    from pipeline import baseline, experiment
    from pipeline.config import compose_train
    from pipeline.model import build_model, class_probabilities

    print("| dataset | alpha | val accuracy (median) | min - max | per seed | epochs | seconds per fit "
          "| teacher: out-of-fold on train / val, per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        results = {alpha: ([], [], []) for alpha in args.alphas}
        teachers = []
        for seed in args.seeds:
            cfg = compose_train([f"dataset={dataset}", f"seed={seed}", "training.verbose=0", *args.overrides])
            experiment.seed_everything(seed, cfg.training.deterministic)
            prepared = experiment.prepare(cfg)
            splits = prepared.splits
            fitted = baseline.fit(splits, cfg.baseline)
            features, classifier = fitted.model.steps[0][1], fitted.model.steps[-1][1]
            y_train = splits.label_ids(splits.train)
            with threadpool_limits(limits=1, user_api="blas"):
                teacher = cross_val_predict(clone(classifier), features.transform(list(splits.train.texts)), y_train,
                                            cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")
            teachers.append(f"{np.mean(teacher.argmax(1) == y_train):.4f} / {fitted.val_accuracy:.4f}")
            classes = prepared.shape.num_classes
            ids, labels = prepared.encoded["train"]
            x_val, y_val = prepared.encoded["val"]
            for alpha in args.alphas:
                experiment.seed_everything(seed, cfg.training.deterministic)
                start = time.perf_counter()
                model = build_model(cfg, prepared.shape, embedding_matrix=prepared.initial_embedding(cfg))
                encoded = dict(prepared.encoded)
                if alpha < 1.0 and classes == 2:  # one sigmoid output: binary cross-entropy takes a soft target
                    encoded["train"] = (ids, (alpha * labels + (1 - alpha) * teacher[:, 1]).astype("float32"))
                elif alpha < 1.0:
                    onehot = np.eye(classes, dtype="float32")
                    encoded["train"] = (ids, (alpha * onehot[labels] + (1 - alpha) * teacher).astype("float32"))
                    encoded["val"] = (x_val, onehot[y_val])
                    model.compile(optimizer=model.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
                history = experiment.fit(model, dataclasses.replace(prepared, encoded=encoded), cfg.training, seed)
                accuracy = float(np.mean(class_probabilities(model, x_val).argmax(1) == y_val))
                for out, value in zip(results[alpha], (accuracy, len(history.history["loss"]), time.perf_counter() - start)):
                    out.append(value)
        for alpha, (scores, epochs, seconds) in results.items():
            print(f"| {dataset} | {alpha:g} | {statistics.median(scores):.4f} | {min(scores):.4f} - {max(scores):.4f} "
                  f"| {' / '.join(f'{s:.4f}' for s in scores)} | {statistics.median(epochs):g} | {statistics.median(seconds):.0f} "
                  f"| {'; '.join(teachers)} |", flush=True)


if __name__ == "__main__":
    main()
