"""Commands run inside another Python program (a notebook calling ``pipeline.cli.main``): what
they leave of that program's own state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import SHRINK

#: A notebook's stderr is an object of its own (not ``sys.__stderr__``); a cell hushed with
#: ``%%capture`` runs with ``sys.stderr`` redirected.
NOTEBOOK = """
import contextlib, io, os, sys
notebook_stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
sys.stderr = notebook_stderr
from pipeline import cli
args = sys.argv[1:]
first = cli.main(args + ["hydra.run.dir=first"])
os.environ.pop("HYDRA_FULL_ERROR", None)  # the entry point sets it for its own Hydra call
with contextlib.redirect_stderr(io.StringIO()):
    second = cli.main(args + ["hydra.run.dir=second"])
import absl.logging
print("exit", first, second, "closed", notebook_stderr.closed,
      "absl back on it", absl.logging.get_absl_handler().python_handler.stream is notebook_stderr)
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
