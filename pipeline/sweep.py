"""A Hydra multirun of ``pipeline train`` as one MLflow parent run with a child run per job.

:class:`MlflowSweep` is a Hydra callback (``hydra.callbacks`` in conf/config.yaml), so it works
with any launcher (basic, ``submitit_local``, SLURM) and any sweeper (basic, Optuna ...): the
parent run is opened when the multirun starts, in the launching process, and its id is left in
the sweep's directory, where each job (in this process or another) finds it. The sweep is known by
its command and overrides: the same command again reopens the same parent, and each job whose
config and data already FINISHED under it is skipped (:func:`pipeline.train.train_and_record`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: Left in the sweep's directory by the launching process; read by every job.
PARENT_FILE = "mlflow_sweep.json"
#: Sweeps this process opened and has not closed: run id -> tracking config.
_OPEN: Dict[str, Any] = {}


def abandon(status: str) -> None:
    """Close the sweeps this process opened (a job's error or Ctrl-C ended the multirun): FAILED
    or KILLED, so that no parent is left RUNNING; the same command resumes the sweep."""
    from pipeline import tracking

    for run_id, tracking_cfg in list(_OPEN.items()):
        try:
            tracking.close_sweep(tracking_cfg, run_id, status)
        finally:
            _OPEN.pop(run_id, None)


def sweep_id(command: str, overrides: List[str], experiment_name: str) -> str:
    """What makes two sweep commands the same sweep: the command, its overrides (in any order)
    and the experiment."""
    return hashlib.sha256(json.dumps([command, sorted(overrides), experiment_name]).encode()).hexdigest()[:16]


class MlflowSweep(Callback):
    """Opens (or reopens) the sweep's parent run before the jobs, closes it after them."""

    def __init__(self) -> None:
        self.parent_run_id: Optional[str] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline import tracking

        hydra = config.hydra
        overrides = [str(o) for o in hydra.overrides.task]
        command = str(hydra.job.name)
        if command != "train":  # a tune multirun: each job is a search, a parent run of its own
            return
        tracking.preflight(config.tracking)
        directory = Path(str(hydra.sweep.dir))
        self.parent_run_id = tracking.open_sweep(
            config.tracking,
            sweep_id(command, overrides, str(config.tracking.experiment_name)),
            run_name=f"sweep-{command}-" + "-".join(o.split("=")[0].split(".")[-1] for o in overrides if "," in o)[:40],
            params={"sweep.overrides": " ".join(overrides)[:6000], "sweep.command": f"pipeline {command}",
                    "sweep.sweeper": str(hydra.sweeper.get("_target_", "")), "sweep.launcher": str(hydra.launcher.get("_target_", ""))},
            tags={"pipeline.command": f"{command} -m", **tracking.process_tag(), "mlflow.note.content": " ".join(["pipeline", command, "-m", *overrides]),
                  "sweep.dir": str(directory.resolve())},  # this run's directory: a resumed sweep has a new one
        )
        directory.mkdir(parents=True, exist_ok=True)
        _OPEN[self.parent_run_id] = config.tracking
        (directory / PARENT_FILE).write_text(json.dumps({"parent_run_id": self.parent_run_id}), encoding="utf-8")
        print(f"sweep {self.parent_run_id}: its jobs are child runs of it (`pipeline compare {self.parent_run_id}` ranks them)", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline import tracking

        if self.parent_run_id is not None:
            jobs = tracking.jobs_of(config.tracking, self.parent_run_id)
            tracking.close_sweep(config.tracking, self.parent_run_id, "FINISHED", jobs)
            _OPEN.pop(self.parent_run_id, None)
            self.parent_run_id = None


def parent_run_id() -> Optional[str]:
    """The sweep's parent run, when this job is a job of a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    for directory in (Path(str(hydra.runtime.output_dir)).parent, Path(str(hydra.sweep.dir))):
        found = directory / PARENT_FILE
        if found.is_file():
            return str(json.loads(found.read_text(encoding="utf-8"))["parent_run_id"])
    return None
