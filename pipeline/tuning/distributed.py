"""One search over several processes: a chief that serves Keras Tuner's oracle, and workers.

With ``tuner.workers=N`` the command's process is the chief and starts N workers on this host,
each the same command again with ``KERASTUNER_TUNER_ID=workerI``; with ``tuner.rank`` (a SLURM
array, other hosts) rank 0 is the chief and publishes the oracle's address in the search state,
and every other rank is a worker that finds it there. Owns which role a process has, serving
the oracle until the search is over, and a worker's loop.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List

import keras_tuner
from omegaconf import DictConfig

from pipeline import experiment
from pipeline.errors import ConfigError, PipelineError
from pipeline.tuning import compat
from pipeline.tuning.project import Project
from pipeline.tuning.tuners import make_tuner

#: How long a worker waits for its chief to write the search state.
WORKER_WAIT_S = 120.0
#: The chief's process id, in the environment of each worker it starts (``tuner.workers``).
CHIEF_PID = "PIPELINE_CHIEF_PID"


def role(cfg: DictConfig) -> str:
    """``local`` (one process, or a chief that starts ``tuner.workers`` on this host),
    ``chief`` (serves the oracle to workers started elsewhere) or ``worker``."""
    if cfg.tuner.rank is not None:
        if cfg.tuner.rank < 0:
            raise ConfigError(f"tuner.rank must be 0 (the chief) or more (a worker), got {cfg.tuner.rank}")
        return "chief" if cfg.tuner.rank == 0 else "worker"
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if "KERASTUNER_ORACLE_IP" in os.environ and tuner_id:
        return "chief" if "chief" in tuner_id else "worker"
    return "local"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_overrides(cfg: DictConfig, overrides: List[str]) -> List[str]:
    """The command line of a worker that ``tuner.workers`` starts on this host: the chief's own,
    as a worker, with ``training.threads`` at its share of the cores unless the command set it
    (TensorFlow's pools default to every core, so N workers would run N threads a core)."""
    skip = ("tuner.workers=", "tuner.overwrite=", "tuner.rank=", "hydra.")
    kept = [o for o in overrides if not o.lstrip("+~").startswith(skip)]
    threads = [] if cfg.training.threads is not None else [f"training.threads={max(1, cores() // int(cfg.tuner.workers))}"]
    return [*kept, "tuner.workers=0", "tuner.overwrite=false", *threads]


def serve(tuner: Any, cfg: DictConfig, project: Project, role: str, overrides: List[str]) -> None:
    """Serve the oracle over gRPC until the search is over, then stop the server.

    ``local``: start ``tuner.workers`` worker processes on this host (the command again, with
    ``overrides``) and stop when they have ended. ``chief``: publish the oracle's address in the
    search state for workers started elsewhere, and stop when the oracle has told every worker
    to stop.
    """
    host = os.environ.get("KERASTUNER_ORACLE_IP", cfg.tuner.oracle_host) if role == "chief" else "127.0.0.1"
    port = int(os.environ.get("KERASTUNER_ORACLE_PORT", 0) or cfg.tuner.oracle_port or _free_port(host))
    tuner.save()
    # The workers print a line as each trial starts and ends (pipeline.tuning.progress); the
    # oracle's own display, on by default in the process serving it, would repeat each as a table.
    tuner.oracle.verbose = 0
    server, servicer = compat.serve_oracle(tuner.oracle, host, port)
    workers: List[subprocess.Popen] = []
    codes: List[int] = []
    try:
        if role == "chief":
            advertised = socket.getfqdn() if host in ("0.0.0.0", "") else host
            project.write_state(oracle=f"{advertised}:{port}")
            print(f"chief: oracle at {advertised}:{port}; start workers with the same command and tuner.rank=1,2,...", flush=True)
            while not compat.oracle_finished(servicer, tuner.oracle):
                time.sleep(0.5)
        else:
            env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port), CHIEF_PID: str(os.getpid())}
            args = [sys.executable, "-m", "pipeline.cli", "tune", *worker_overrides(cfg, overrides)]
            for i in range(int(cfg.tuner.workers)):
                workers.append(subprocess.Popen(args, env={**env, "KERASTUNER_TUNER_ID": f"worker{i}"}))
            codes = [w.wait() for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)
        server.stop(grace=2).wait()
        if role == "chief":
            project.write_state(oracle=None)
    if any(codes):
        raise PipelineError(f"tuner workers exited with status {codes}; the search can be resumed with the same command")


def _ends_with_its_chief() -> None:
    """A worker the chief started (``tuner.workers``) ends when the chief does, however the chief
    ends (``kill -9`` too, where its own clean-up never runs): Linux sends it SIGTERM, which stops it
    as it stops any command (its trial run KILLED, exit 143); else it waits for a chief that is gone,
    its gRPC client set to wait for the server as long as it takes."""
    chief = os.environ.get(CHIEF_PID)
    if not chief:  # started by hand, or by a launcher: its own process
        return
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if str(os.getppid()) != chief:  # the chief ended before that was set
        raise PipelineError("the chief that started this worker has ended; the search resumes with the chief's command")


def work(cfg: DictConfig, prepared: experiment.Prepared, identity: Dict[str, str], hp: keras_tuner.HyperParameters) -> float:
    """A worker: find the chief's search and oracle, then run trials until the oracle stops."""
    _ends_with_its_chief()
    from pathlib import Path

    from pipeline.config import to_container
    from pipeline.tune import ended

    project = Project(Path(cfg.tuner.directory), str(cfg.tuner.project_name), identity)
    deadline = time.monotonic() + WORKER_WAIT_S
    state: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = project.state()
        if state.get("identity") == identity and not state.get("oracle") and ended(state, to_container(cfg)):
            # a worker started late (a SLURM array's last task): nothing left to run, and no failure
            print(f"worker: the search at {project.path} has ended; no trial left to run", flush=True)
            return float("nan")
        if state.get("identity") == identity and (
            "KERASTUNER_ORACLE_IP" in os.environ or (state.get("oracle") and _reachable(state["oracle"]))
        ):
            break
        if state.get("project_name") and state["project_name"] != project.name:  # tuner.on_change=new_project
            project = Project(project.directory, state["project_name"], identity)
            continue
        time.sleep(0.5)
    else:
        if state and state.get("identity") != identity:
            raise ConfigError(f"this worker's config differs from the chief's search at {project.path}")
        raise PipelineError(f"no chief serving the search at {project.path} after {WORKER_WAIT_S:.0f} s; start the chief")
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        host, _, port = state["oracle"].rpartition(":")
        os.environ.update(
            KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port, KERASTUNER_TUNER_ID=f"worker{cfg.tuner.rank}"
        )
    tuner = make_tuner(cfg, prepared, project, state["parent_run_id"], hp)
    tuner.search(verbose=0)
    print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')} done", flush=True)
    return float("nan")
