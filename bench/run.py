"""Every benchmark, one after another, and one summary of their tables.

    pip install -e ".[bench]" && python bench/run.py

Runs bench/lstm_speed.py (training speed against the tutorial's Keras code and PyTorch),
bench/search_cost.py (tracking overhead, Hyperband versus random search) and
bench/tune_memory.py (memory over a 20-trial search), each in its own process on SST-2 from
../shared/data (or $PIPELINE_DATA_DIR) and BBC News, then writes bench/results/SUMMARY.md.
`--out DIR` writes the results there instead of bench/results. About 25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("lstm_speed", "search_cost", "tune_memory")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    out = Path(parser.parse_args().out)
    extra = ["--out", str(out)]
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *extra])
        if code != 0:
            print(f"error: bench/{name}.py failed (exit {code})", file=sys.stderr)
            return code
        print(f"== {name} done in {time.monotonic() - started:.0f} s", flush=True)
    parts = [(out / f"{name}.md").read_text() for name in SCRIPTS]
    (out / "SUMMARY.md").write_text("\n".join(parts))
    print(f"wrote {out / 'SUMMARY.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
