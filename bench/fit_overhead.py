"""What a fit costs beyond its epochs: TensorFlow tracing the training step once or twice.

Keras (3.15, TensorFlow, no distribution strategy) makes the optimizer's and the compiled metrics'
variables while it traces the training step, and TensorFlow then traces the step a second time.
`experiment.fit` makes them first (`experiment.built_before_tracing`), so it is traced once. This
times `experiment.fit` of a new model both ways, taking turns in one process (the same data, seed
and model each time), and reports the median seconds per fit, the median of the per-round ratios
and whether the loss curves are identical.

    python bench/fit_overhead.py [--rounds 5] [--sets small main]

`small`: 200 BBC News articles, LSTM 8 / embedding 8, 2 epochs (the size of the tests' fits);
`main`: all of BBC News's training split, the main job's best model (LSTM 224, embedding 32), 2 epochs.
Writes bench/results/fit_overhead.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
SETS = {
    "small": ["+debug=fast", "dataset.max_samples=200", "training.epochs=2", "model.units=8", "model.embedding_dim=8"],
    "main": ["training.epochs=2", "model.units=224", "model.embedding_dim=32", "training.early_stopping.enabled=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args()

    from pipeline import config, experiment
    from pipeline.model import build_model

    real = experiment.built_before_tracing
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            cfg = config.compose_train([*SETS[name], f"paths.mlruns_dir={tmp}/mlruns", "training.verbose=0"])
            prepared = experiment.prepare(cfg)
            times: Dict[str, List[float]] = {"once": [], "twice": []}
            curves: Dict[str, List[List[float]]] = {"once": [], "twice": []}
            for _ in range(args.rounds):
                for how in ("once", "twice"):
                    experiment.built_before_tracing = real if how == "once" else (lambda model, targets: None)
                    experiment.seed_everything(cfg.seed, cfg.training.deterministic)
                    model = build_model(cfg, prepared.shape, prepared.initial_embedding(cfg))
                    start = time.perf_counter()
                    history = experiment.fit(model, prepared, cfg.training, cfg.seed)
                    times[how].append(time.perf_counter() - start)
                    curves[how].append(history.history["loss"])
            experiment.built_before_tracing = real
            ratios = [a / b for a, b in zip(times["once"], times["twice"])]
            rows.append({
                "set": name,
                "once_s": statistics.median(times["once"]),
                "twice_s": statistics.median(times["twice"]),
                "saved_s": statistics.median([b - a for a, b in zip(times["once"], times["twice"])]),
                "ratio": statistics.median(ratios),
                "identical_losses": all(c == curves["once"][0] for c in curves["once"] + curves["twice"]),
                "rounds": args.rounds,
            })
            print(rows[-1], flush=True)

    out = ROOT / "bench" / "results"
    (out / "fit_overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# A fit's training step traced once or twice (`python bench/fit_overhead.py`)",
        "",
        "| set | traced once: s per fit | twice (Keras alone) | saved per fit | ratio once/twice | identical losses | rounds |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['set']} | {r['once_s']:.2f} | {r['twice_s']:.2f} | {r['saved_s']:.2f} | {r['ratio']:.2f} | "
          f"{'yes' if r['identical_losses'] else 'NO'} | {r['rounds']} |" for r in rows),
        "",
    ]
    (out / "fit_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
