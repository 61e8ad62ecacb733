"""Hydra's own records of a job, scrubbed of secrets as the MLflow store is.

Owns :class:`ScrubOutputs`, the Hydra callback (``hydra.callbacks.scrub_outputs`` in
conf/config.yaml) that rewrites the files Hydra writes beside a job (``.hydra/config.yaml``,
``overrides.yaml``, ``hydra.yaml``; a multirun's ``multirun.yaml``; the job's log) through
:func:`pipeline.redact.scrub`. Light to import: Hydra instantiates its callbacks for
every command, also one refused in a second, so MLflow is imported only once a job runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode


def scrub_file(path: Path) -> None:
    """The text file at ``path`` scrubbed in place, replaced whole (a reader sees the old file or
    the new one); left as it is when it holds no secret or is gone."""
    from pipeline.redact import scrub

    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return
    scrubbed = scrub(text)
    if scrubbed != text:
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(scrubbed, encoding="utf-8")
        os.replace(partial, path)


class ScrubOutputs(Callback):
    """The files Hydra writes beside a job scrubbed as soon as Hydra has written them (before the
    job runs), and the job's log when it ends."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.output_subdir is not None:
            for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
                scrub_file(Path(str(hydra.runtime.output_dir)) / str(hydra.output_subdir) / name)
        if hydra.mode == RunMode.MULTIRUN:
            scrub_file(Path(str(hydra.sweep.dir)) / "multirun.yaml")

    def on_job_end(self, config: Any, **kwargs: Any) -> None:
        scrub_file(Path(str(config.hydra.runtime.output_dir)) / f"{config.hydra.job.name}.log")
