"""`pipeline tune`: a Keras Tuner search, one MLflow parent run with a child run per trial.

The same command after a crash continues the search. With ``tuner.workers=N`` this process
is Keras Tuner's chief: it serves the oracle and starts N worker processes, which run the
trials; each worker is this command again with ``KERASTUNER_TUNER_ID=workerI``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from concurrent import futures
from typing import Any, Dict, List

from omegaconf import DictConfig

from pipeline import evaluate, experiment, search_space, tracking, tuning
from pipeline.config import to_container
from pipeline.errors import ConfigError, PipelineError
from pipeline.train import hydra_overrides

#: How long a worker waits for its chief to write the search state.
WORKER_WAIT_S = 120.0


def _role(cfg: DictConfig) -> str:
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


def _serve_oracle(tuner: Any, cfg: DictConfig, project: tuning.Project, role: str) -> None:
    """Serve the oracle over gRPC until the search is over, then stop the server.

    ``local``: start ``tuner.workers`` worker processes on this host and stop when they have
    ended. ``chief``: publish the oracle's address in the search state for workers started
    elsewhere, and stop when Keras Tuner's oracle has told every worker to stop. (Keras Tuner's
    own chief loop never stops its gRPC server, so its chief process does not exit.)
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    host = os.environ.get("KERASTUNER_ORACLE_IP", cfg.tuner.oracle_host) if role == "chief" else "127.0.0.1"
    port = int(os.environ.get("KERASTUNER_ORACLE_PORT", 0) or cfg.tuner.oracle_port or _free_port(host))
    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    workers: List[subprocess.Popen] = []
    codes: List[int] = []
    try:
        if role == "chief":
            advertised = socket.getfqdn() if host in ("0.0.0.0", "") else host
            project.write_state(oracle=f"{advertised}:{port}")
            print(f"chief: oracle at {advertised}:{port}; start workers with the same command and tuner.rank=1,2,...", flush=True)
            while not (servicer.stop_triggered and exit_chief(tuner.oracle)):
                time.sleep(0.5)
        else:
            skip = ("tuner.workers=", "tuner.overwrite=", "tuner.rank=", "hydra.")
            overrides = [o for o in hydra_overrides() if not o.lstrip("+~").startswith(skip)]
            env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
            for i in range(int(cfg.tuner.workers)):
                args = [sys.executable, "-m", "pipeline.cli", "tune", *overrides, "tuner.workers=0", "tuner.overwrite=false"]
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


def _work(cfg: DictConfig, prepared: experiment.Prepared, identity: Dict[str, str], hp: Any) -> float:
    """A worker: find the chief's search and oracle, then run trials until the oracle stops."""
    project = tuning.Project(tuning.Path(cfg.tuner.directory), str(cfg.tuner.project_name), identity)
    deadline = time.monotonic() + WORKER_WAIT_S
    state: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = project.state()
        if state.get("identity") == identity and (
            "KERASTUNER_ORACLE_IP" in os.environ or (state.get("oracle") and _reachable(state["oracle"]))
        ):
            break
        if state.get("project_name") and state["project_name"] != project.name:  # tuner.on_change=new_project
            project = tuning.Project(project.directory, state["project_name"], identity)
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
    tuner = tuning.make_tuner(cfg, prepared, project, state["parent_run_id"], hp)
    tuner.search(verbose=0)
    print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')} done", flush=True)
    return float("nan")


def run(cfg: DictConfig) -> float:
    """Search, record every trial, evaluate and register the best model; returns its score."""
    config = to_container(cfg)
    hp = tuning.validate(cfg)
    experiment.check_training(cfg.training)
    tracking.preflight(cfg.tracking)
    experiment.seed_everything(cfg.seed, cfg.training.deterministic)
    prepared = experiment.prepare(cfg)
    identity = tuning.search_identity(cfg, prepared.splits.fingerprint()["all"])
    role = _role(cfg)
    if role == "worker":
        return _work(cfg, prepared, identity, hp)

    project = tuning.resolve_project(cfg, identity)
    state = project.state()
    parent_id = state.get("parent_run_id")
    resumed = bool(parent_id) and tracking.run_exists(cfg.tracking, parent_id)
    tags = {
        **experiment.run_tags(cfg, config, prepared, "tune"),
        "tuner.project": project.name,
        "tuner.directory": str(project.path),
        "tuner.name": str(cfg.tuner.name),
    }
    run_name = f"search-{cfg.dataset.name}-{cfg.model.name}-{cfg.tuner.name}-seed{cfg.seed}"
    with tracking.tracked_run(cfg.tracking, run_name, tags, run_id=parent_id if resumed else None) as parent:
        parent_id = parent.info.run_id
        if not resumed:
            experiment.record_inputs(config, hydra_overrides(), prepared)
            tracking.log_dict(search_space.describe(cfg.search_space), "search/search_space.yaml")
        project.write_state(parent_run_id=parent_id, project_name=project.name, resumed=int(state.get("resumed", 0)) + int(resumed))

        tuner = tuning.make_tuner(cfg, prepared, project, parent_id, hp)
        if resumed:
            killed = tracking.reconcile_children(cfg.tracking, parent_id, tuning.trial_statuses(tuner))
            tracking.set_tags({"resumed": str(int(state.get("resumed", 0)) + 1)})
            print(f"resuming search {project.path} (parent run {parent_id}; {len(killed)} interrupted trial run(s) marked KILLED)", flush=True)
        if role == "chief" or cfg.tuner.workers > 0:
            _serve_oracle(tuner, cfg, project, role)
        else:
            tuner.search(verbose=0)

        table = tuning.trial_table(tuner, cfg.tuner.direction)
        completed = table[table["status"] == "COMPLETED"] if not table.empty else table
        if completed.empty:
            raise PipelineError("no trial completed; see the FAILED trial runs' error tags")
        tracking.log_table(table, "search/trials.csv")
        names = [n for n in cfg.search_space if n in table.columns]
        tracking.log_figure(evaluate.plot_search_scores(table, names, cfg.tuner.objective), "plots/search_scores.png")
        best = tuner.oracle.get_best_trials(1)[0]
        best_values = tuning.searched_values(best)
        tracking.log_metrics({"best_score": float(best.score), "trials_completed": float(len(completed)), "trials_total": float(len(table))})
        tracking.set_tags({"best_trial_id": str(best.trial_id), **{f"best.{k}": str(v) for k, v in best_values.items()}})
        tracking.log_dict({"trial_id": best.trial_id, "score": best.score, "hyperparameters": best_values}, "search/best.json")

        if cfg.tuner.seed_variance.top_k > 0:
            variance = tuning.seed_variance(tuner, cfg, prepared, parent_id)
            objective = str(cfg.tuner.objective)
            tracking.log_table(variance, "search/seed_variance.csv")
            top = variance.iloc[0]
            tracking.log_metrics({"seed_variance.best_mean": float(top[f"{objective}_mean"]),
                                  "seed_variance.best_std": float(top[f"{objective}_std"])})
            warning = tuning.seed_noise_warning(variance, objective)
            tracking.set_tags({"seed_variance.warning": warning or "none"})
            if warning:
                print(f"warning: {warning}", flush=True)

        # Once per best trial, also when a resumed search's process died just after registering.
        version_tags = {"best_trial_id": str(best.trial_id)}
        register = cfg.tuner.registered_model_name
        if register and (state.get("registered_trial") == best.trial_id
                         or tracking.registered_for(str(cfg.tracking.uri), register, parent_id, version_tags)):
            register = None
        with warnings.catch_warnings():
            # the checkpoint holds Adam's slots; the rebuilt model's optimizer is fresh and unused here
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = tuner.get_best_models(1)[0]
        final = "the best trial's model"
        if cfg.tuner.ensemble.seeds:
            x_test, y_test = prepared.encoded["test"]
            single = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"]
            model, members = tuning.ensemble(tuner, cfg, prepared, project, parent_id, best, model)
            tracking.log_table(members, "search/ensemble.csv")
            tracking.log_metrics({"ensemble.members": float(len(members) - 1), "ensemble.val_accuracy": float(members.iloc[-1]["val_accuracy"]),
                                  "best_trial.test_accuracy": float(single)})
            final = f"an average of {len(members) - 1} models (best trial alone: test_accuracy={single:.4f})"
        metrics = experiment.record_evaluation(model, prepared, cfg, registered_model_name=register, version_tags=version_tags)
        if register:
            project.write_state(registered_trial=best.trial_id)
        experiment_id = parent.info.experiment_id

    print(
        f"search {parent_id} ({cfg.dataset.name}, {cfg.tuner.name}): {len(completed)} trials, best {cfg.tuner.objective}="
        f"{best.score:.4f} {best_values}; final model {final}: test_accuracy={metrics['accuracy']:.4f} | "
        f"UI: {tracking.ui_hint(cfg.tracking, experiment_id, parent_id)}",
        flush=True,
    )
    return float(best.score)
