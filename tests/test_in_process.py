"""Commands run inside another Python program (a notebook calling ``pipeline.cli.main``): what
they leave of that program's own state."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import SHRINK

#: A notebook's stderr is an object of its own (not ``sys.__stderr__``); a cell hushed with
#: ``%%capture`` runs with ``sys.stderr`` redirected.
NOTEBOOK = """
import contextlib, io, logging, os, sys
notebook_stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
sys.stderr = notebook_stderr
from pipeline import cli
args = sys.argv[1:]
found = (list(sys.argv), dict(os.environ), logging.getLogger().level, list(logging.getLogger().handlers))
first = cli.main(args + ["hydra.run.dir=first"])
with contextlib.redirect_stderr(io.StringIO()):
    second = cli.main(args + ["hydra.run.dir=second", "--verbose"])
import absl.logging
print("exit", first, second, "closed", notebook_stderr.closed,
      "absl back on it", absl.logging.get_absl_handler().python_handler.stream is notebook_stderr)
own = ("HYDRA_FULL_ERROR", "PIPELINE_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
after = (list(sys.argv), {k: v for k, v in os.environ.items() if k in found[1] or k in own},
         logging.getLogger().level, list(logging.getLogger().handlers))
print("left as found", after == found, [k for k in own if os.environ.get(k) != found[1].get(k)])
told = io.StringIO()
with contextlib.redirect_stderr(told):
    third = cli.main(["train", "training.epochz=1"])
print("a mistake after them", third, told.getvalue().strip().splitlines())
print("a warning after them", file=sys.stderr)
"""


def test_a_command_in_a_redirected_cell_leaves_the_notebooks_stderr_open(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", NOTEBOOK, "train", *SHRINK, "dataset.max_samples=200", "tracking.log_model=false"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # absl's log handler (made on the notebook's stderr as TensorFlow loaded) was closed by the
    # second command's logging set-up, and closed that stream with it
    assert "exit 0 0 closed False" in result.stdout, result.stdout[-2000:]
    # and absl's handler, pointed at the second command's stderr while it ran, is back on the notebook's
    assert "absl back on it True" in result.stdout, result.stdout[-2000:]
    # the program's argv, the environment the commands set for themselves (Hydra's raised errors,
    # --verbose, MLflow's retries) and its root logger, as they were: a mistake after two commands
    # is the same one line as a first command's, not Hydra's traceback
    assert "left as found True []" in result.stdout, result.stdout[-2000:]
    assert re.search(r"a mistake after them 2 \[.error: [^\n]*did you mean training\.epochs\?.\]$", result.stdout, re.M), result.stdout[-2000:]
