"""The `pipeline` console script: `pipeline <command> [Hydra overrides]`.

Each command is a Hydra app over ``conf/``, so every Hydra feature works as documented:
``-m`` multirun, ``--cfg job``, ``--help``, ``--info``. A user mistake ends with one
``error:`` line and exit status 2; Ctrl-C with status 130, SIGTERM 143; a tracking server
lost mid-run with status 75 (the same command resumes a search).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional

from pipeline.errors import first_line

USAGE = """usage: pipeline <command> [overrides ...] [-m] [--help]

commands:
  train    train one LSTM text classifier and record it in MLflow
  tune     search its hyperparameters with Keras Tuner: a parent run, a child run per trial
  rerun    rerun a past run exactly from its MLflow record: pipeline rerun RUN_ID [--force]
  compare  rank runs side by side: pipeline compare [RUN_ID ...] [--experiment NAME]
  predict  label texts with a logged model: pipeline predict RUN_ID|MODEL_NAME TEXT ... [--file PATH]

Overrides are Hydra's: `pipeline train dataset=sst2 model=bilstm training.epochs=5 seed=1`.
Sweep with -m: `pipeline train -m dataset=sst2,mr seed=1,2,3`.
`pipeline train --help` lists the config groups, their options and every key.
"""


def argument_parser(prog: str, description: str) -> Any:
    """argparse, but a mistake is a one-line `error:` (exit 2) rather than usage + message."""
    import argparse

    from pipeline.errors import UsageError

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(f"{message} (see `{self.prog} --help`)")

    return Parser(prog=prog, description=description)


def _hydra_message(error: BaseException) -> str:
    """Hydra's compose-time message (what, why, and the options there are) on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    override = getattr(error, "override", None)  # OverrideParseException
    if override is not None:
        message = f"cannot parse override {override!r}: {message} (see `pipeline train --help`)"
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        message = f"{message.rstrip('.')}: {first_line(cause)}"
    if "Available options" in str(error):
        start = lines.index(next(line for line in lines if line.startswith("Available options")))
        options = [line for line in lines[start + 1 :] if not line.startswith(("Config search path", "provider="))]
        message = f"{message}; available: {', '.join(options)}"
    hint = next((line for line in lines[1:] if line.startswith("To append")), None)
    return f"{message} ({hint[0].lower() + hint[1:]})" if hint else message


#: A tracking server lost mid-run (sysexits' EX_TEMPFAIL): try again when it is back.
EXIT_TRACKING_LOST = 75


def _guarded(job: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a job; a user mistake becomes one line on stderr and exit status 2, a tracking
    server lost mid-run one line and exit status 75."""
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.errors import PipelineError, TrackingLost

    try:
        return job(cfg)
    except (PipelineError, OmegaConfBaseException) as e:
        print(f"error: {first_line(e)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_TRACKING_LOST if isinstance(e, TrackingLost) else 2)
    except Exception as e:
        from pipeline import tracking

        if not tracking.is_lost(e):
            raise
        print(f"error: {first_line(tracking.lost(e, str(cfg.tracking.uri)))}", file=sys.stderr, flush=True)
        sys.exit(EXIT_TRACKING_LOST)


def _hydra_app(config_name: str, job: Callable[[Any], Any]) -> Callable[[], Any]:
    import hydra

    from pipeline.config import CONF_DIR, register_configs

    register_configs()

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def app(cfg: Any) -> Any:
        return _guarded(job, cfg)

    return app


def _train(cfg: Any) -> float:
    from pipeline import tracking

    tracking.check_server(cfg.tracking)  # before TensorFlow is imported: an unreachable server is told in seconds
    from pipeline import train

    return train.run(cfg)


def _tune(cfg: Any) -> float:
    from pipeline import tracking

    tracking.check_server(cfg.tracking)
    from pipeline import tune

    return tune.run(cfg)


COMMANDS: Dict[str, tuple] = {"train": ("config", _train), "tune": ("tune", _tune)}

RERUN_USAGE = """usage: pipeline rerun RUN_ID [--force] [key=value ...]

Trains again what run RUN_ID recorded (a train run; a search's trial; a search's parent: its
best trial) and records a new run tagged rerun_of=RUN_ID, then says whether every epoch's
loss matched. The git commit, dirty flag, data fingerprint and key package versions are
compared first; a difference stops it unless --force.
key=value overrides apply on top (e.g. training.deterministic=false); tracking.uri=URI
reads and writes another store (default: mlruns/mlflow.db here).
"""


def _plain_command(name: str, rest: List[str]) -> int:
    """Commands whose config comes from a past run, not from Hydra's composition."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.errors import PipelineError

    try:
        if name == "rerun":
            if not rest or rest[0] in ("-h", "--help"):
                print(RERUN_USAGE)
                return 0 if rest else 2
            flags = [a for a in rest[1:] if a.startswith("--")]
            unknown = [f for f in flags if f != "--force"]
            if unknown or rest[0].startswith("-"):
                print(f"error: unknown option {(unknown or rest)[0]!r}; see `pipeline rerun --help`", file=sys.stderr)
                return 2
            from pipeline import rerun

            rerun.run(rest[0], [a for a in rest[1:] if not a.startswith("--")], force="--force" in flags)
            return 0
        if name == "predict":
            from pipeline import predict

            return predict.main(rest)
        from pipeline import compare

        return compare.main(rest)
    except HydraException as e:
        print(f"error: {_hydra_message(e)}", file=sys.stderr, flush=True)
        return 2
    except (PipelineError, OmegaConfBaseException) as e:
        print(f"error: {first_line(e)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            raise
        print("interrupted", file=sys.stderr)
        return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the open MLflow runs are marked KILLED on the way out."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    """The console script. SIGTERM stops like Ctrl-C (runs KILLED), exiting 143 instead of 130."""
    import signal

    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return _main(argv)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command in ("rerun", "compare", "predict"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return _plain_command(command, rest)
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; commands: {', '.join([*COMMANDS, 'rerun', 'compare', 'predict'])}", file=sys.stderr)
        return 2
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Hydra then raises instead of printing; a user's own setting keeps the full trace.
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    config_name, job = COMMANDS[command]
    sys.argv = [f"pipeline {command}", *rest]
    try:
        _hydra_app(config_name, job)()
    except Terminated:
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (HydraException, OmegaConfBaseException) as e:
        if full_error:
            raise
        print(f"error: {_hydra_message(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
