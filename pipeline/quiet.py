"""What the libraries under the pipeline print as they start: nothing, unless asked for.

TensorFlow writes lines on stderr as it loads and first runs (absl's "All log messages before
absl::InitializeLog() is called ...", CUDA's "Could not find cuda drivers", a failed ``cuInit``,
the CPU-feature and oneDNN notices, op-definition mismatches), and MLflow logs INFO lines (creating a
store's tables, inferring a signature, a link per run); a user's mistake, told in one ``error:``
line, was the last of many. By default the console script, before anything imports TensorFlow,
sets TensorFlow's C++ log level to FATAL only and MLflow's to WARNING, and drops what TensorFlow
writes to stderr while it is being imported (those lines come before its log level is read); and
TensorFlow's warning about retracing, which a process that builds a model per job prints by design.

``pipeline --verbose ...`` or ``PIPELINE_TF_LOGS=1`` leaves all of it as the libraries have it.
Environment variables are set for this process only (and the search's worker processes it starts,
which inherit them), and a value the user set is kept.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Any, Iterator, Mapping, Optional, Sequence

#: The environment switch: anything but empty, 0, false or no shows the libraries' start-up lines.
VERBOSE_ENV = "PIPELINE_TF_LOGS"
#: The command-line switch, taken out before the command (Hydra, argparse) sees its arguments.
VERBOSE_FLAG = "--verbose"

#: Set (where the user has not) unless verbose: TensorFlow's C++ logging at FATAL only (3: not
#: INFO, WARNING or ERROR), MLflow's Python logging at WARNING, and no MLflow progress bars (a
#: "Downloading artifacts" bar per artifact a job reads back).
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def wants_logs(environ: Mapping[str, str]) -> bool:
    """Whether ``PIPELINE_TF_LOGS`` asks for the libraries' start-up lines."""
    return environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def configure(args: Sequence[str]) -> list:
    """Silence the libraries' start-up lines unless ``--verbose`` (in ``args``, before any ``--``)
    or ``PIPELINE_TF_LOGS=1`` asks for them; returns ``args`` without that ``--verbose``."""
    end = list(args).index("--") if "--" in args else len(args)  # after `--`: texts (pipeline predict), kept as they are
    rest = [a for a in args[:end] if a != VERBOSE_FLAG] + list(args[end:])
    if len(rest) < len(args) or wants_logs(os.environ):
        os.environ[VERBOSE_ENV] = "1"  # the search's worker processes show them too
        return rest
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    tensorflow_logger = logging.getLogger("tensorflow")  # TensorFlow's Python logger, the same object once it is imported
    if not any(isinstance(f, _ExpectedRetracing) for f in tensorflow_logger.filters):
        tensorflow_logger.addFilter(_ExpectedRetracing())
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    return rest


class _ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function> triggered tf.function retracing"
    warning. A process that runs several jobs (a ``-m`` sweep, a search and its refits) builds a new
    model for each, and each model traces its own predict and train steps: retracing by design, the
    warning's own case (1), which TensorFlow counts across the models and reports once the jobs pass
    its threshold, as if something were wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _stderr_dropped() -> Iterator[None]:
    """File descriptor 2 pointed at the null device (C++ code writes there, not to ``sys.stderr``)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to point elsewhere
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with stderr dropped."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # the module is TensorFlow's own from here on: its loader is the real one
        module.__spec__.loader = module.__loader__ = self._loader
        with _stderr_dropped():
            self._loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the first time it is imported (by anything: Keras, Keras Tuner, the
    pipeline) and has it loaded by :class:`_QuietLoader`; inert afterwards."""

    def __init__(self) -> None:
        self._done = False

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None, target: Any = None) -> Any:
        if name != "tensorflow" or self._done:
            return None
        self._done = True  # the search below, and every later import, passes this finder by
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


@contextlib.contextmanager
def absl_on_this_stderr() -> Iterator[None]:
    """absl's log handler writing to the command's ``sys.stderr`` while the command runs, and to
    the stream it had before once it ends.

    absl makes its handler once, on the ``sys.stderr`` of the moment it is first imported (with
    TensorFlow). Hydra configures logging at every job (``logging.config.dictConfig``), which closes
    every handler the process has made, and absl's closes its stream unless that stream is the
    current ``sys.stderr`` or ``sys.stdout``: in a notebook, a command run in a cell whose output was
    redirected (``%%capture``, ``contextlib.redirect_stderr``) after one that was not closed the
    notebook's own stderr."""
    absl = sys.modules.get("absl.logging")
    handler = getattr(absl.get_absl_handler(), "python_handler", None) if absl is not None else None
    if handler is None or not hasattr(handler, "stream"):
        yield
        return
    before = handler.stream
    handler.stream = sys.stderr
    try:
        yield
    finally:
        handler.stream = before
