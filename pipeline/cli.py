"""The `pipeline` console script: `pipeline <command> [Hydra overrides]`.

Each command is a Hydra app over ``conf/``, so every Hydra feature works as documented:
``-m`` multirun, ``--cfg job``, ``--help``, ``--info``. A user mistake ends with one
``error:`` line and exit status 2; Ctrl-C with status 130, SIGTERM 143; a tracking server
lost mid-run with status 75, a full disk (no space, a quota, the file size limit) with status 74
(the same command resumes a search). TensorFlow's and MLflow's
start-up lines are silenced (``pipeline.quiet``); ``--verbose`` anywhere on the line shows them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

from pipeline import heap, quiet
from pipeline.errors import first_line, shown

@dataclass(frozen=True)
class Command:
    """One `pipeline` command: what it does, and the function that runs it."""

    name: str
    summary: str
    #: ``module:function``: called with the composed config (Hydra commands) or the arguments.
    target: str
    #: The Hydra config it composes from ``conf/`` (``config``, ``tune``); None for a command
    #: whose config comes from a past run or that reads the store only.
    config_name: Optional[str] = None

    def function(self) -> Callable[[Any], Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


#: Every command, once: the usage text, the dispatch and the error for an unknown one come from here.
COMMANDS: Dict[str, Command] = {c.name: c for c in (
    Command("train", "train one LSTM text classifier and record it in MLflow", "pipeline.train:run", "config"),
    Command("tune", "search its hyperparameters with Keras Tuner: a parent run, a child run per trial", "pipeline.tune:run", "tune"),
    Command("rerun", "rerun a past run exactly from its MLflow record: pipeline rerun RUN_ID [--force] [overrides]", "pipeline.rerun:main"),
    Command("compare", "rank runs side by side: pipeline compare [RUN_ID ...] [--experiment NAME]", "pipeline.compare:main"),
    Command("predict", "label texts with a logged model: pipeline predict RUN_ID|MODEL_NAME TEXT ... [--file PATH]", "pipeline.predict:main"),
)}

USAGE = "usage: pipeline <command> [overrides ...] [-m] [--help]\n\ncommands:\n" + "".join(
    f"  {c.name:<8} {c.summary}\n" for c in COMMANDS.values()
) + """
Overrides are Hydra's: `pipeline train dataset=sst2 model=bilstm training.epochs=5 seed=1`.
Sweep with -m: `pipeline train -m dataset=sst2,mr seed=1,2,3`.
`pipeline train --help` lists the config groups, their options and every key.
--verbose (or PIPELINE_TF_LOGS=1) shows TensorFlow's and MLflow's start-up lines, silenced by default.
"""


def _parse_error(override: str, text: str) -> str:
    """Hydra's override parse error, with the column its caret points at (a quote left open:
    where it opens, not where the override ends)."""
    raw = text.splitlines()
    first = raw[0].strip() if raw else ""
    caret = next((line.index("^") for line in raw[1:] if line.strip() == "^"), None)
    start = raw[0].rfind(override) if raw else -1
    if caret is None or start < 0 or not 0 <= caret - start < len(override):
        return first
    column = caret - start
    char = override[column]
    if char in "\"'" and char not in override[column + 1 :].replace("\\" + char, ""):
        return f"unterminated quote at column {column + 1}"
    return f"unexpected {char!r} at column {column + 1}"


def _did_you_mean(error: BaseException) -> str:
    """For a key that is not in its section's schema: the nearest key that is (never ``+key``, which
    would only add the misspelled one: pipeline/validate.py refuses it)."""
    import dataclasses

    cause = error.__cause__
    schema, key = getattr(cause, "object_type", None), getattr(cause, "key", None)
    if key is None or not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return ""
    fields = [f.name for f in dataclasses.fields(schema)]
    if str(key) in fields:  # a value the key does not take, not a key that is not there
        return ""
    from pipeline.validate import closest

    full_key = str(getattr(cause, "full_key", "") or key)
    return closest(str(key), fields, full_key[: -len(str(key))] if full_key.endswith(str(key)) else "")


def _hydra_message(error: BaseException, command: str = "train") -> str:
    """Hydra's compose-time message (what, why, and the options there are) on one line; a parse
    error points at the ``command``'s own help."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    override = getattr(error, "override", None)  # OverrideParseException
    if override is not None:
        message = f"cannot parse override {override!r}: {_parse_error(override, str(error))} (see `pipeline {command} --help`)"
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        message = f"{message.rstrip('.')}: {first_line(cause)}"
    if "Available options" in str(error):
        start = lines.index(next(line for line in lines if line.startswith("Available options")))
        options = [line for line in lines[start + 1 :] if not line.startswith(("Config search path", "provider="))]
        message = f"{message}; available: {', '.join(options)}"
    if command == "train" and re.search(r"'(tuner|search_space)[.'/]", str(error)):
        # `pipeline train tuner=random`: Hydra's "No match in the defaults list", or a schema's KeyError
        return f"{message.rstrip(':.')}; tuner and search_space are settings of `pipeline tune`, not `pipeline train`"
    return message + _did_you_mean(error)


#: A tracking server lost mid-run (sysexits' EX_TEMPFAIL): try again when it is back.
EXIT_TRACKING_LOST = 75
#: A write failed for want of space (sysexits' EX_IOERR; ``pipeline.diskfull``): run again once there is space.
EXIT_DISK_FULL = 74


def _error(message: Any) -> None:
    """The one ``error:`` line, on stderr, with every secret in it written ``***`` (a password in a
    URI, a secret parameter, an environment secret's value: ``pipeline.redact``), since Hydra's and
    OmegaConf's messages repeat the override or the value as typed."""
    from pipeline.redact import scrub

    print(f"error: {scrub(str(message))}", file=sys.stderr, flush=True)


def _guarded(job: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a job; a user mistake becomes one line on stderr and exit status 2, a tracking
    server lost mid-run one line and exit status 75, a full disk one line and exit status 74."""
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.diskfull import full_disk
    from pipeline.errors import DiskFull, PipelineError, TrackingLost

    try:
        return job(cfg)
    except (PipelineError, OmegaConfBaseException) as e:
        _error(first_line(e))
        sys.exit(EXIT_TRACKING_LOST if isinstance(e, TrackingLost) else EXIT_DISK_FULL if isinstance(e, DiskFull) else 2)
    except Exception as e:
        from pipeline import tracking

        if tracking.is_lost(e):
            _error(first_line(tracking.lost(e, str(cfg.tracking.uri))))
            sys.exit(EXIT_TRACKING_LOST)
        full = full_disk(e, store=tracking.store_file(str(cfg.tracking.uri)))
        if full is None:
            raise
        _error(first_line(full))
        sys.exit(EXIT_DISK_FULL)


def _hydra_app(command: Command) -> Callable[[], Any]:
    import hydra

    from pipeline.config import CONF_DIR, register_configs

    register_configs()

    def job(cfg: Any) -> Any:
        from pipeline import tracking, validate

        # a launcher's job in a process of its own (submitit: SLURM, submitit_local) is not inside
        # main(): its command scope opens here (pipeline/heap.py); inside main() this one is nested
        with heap.command():
            if not validate.store_checked(cfg.tracking):  # a sweep's job: checked again, as it starts
                tracking.check_store(cfg.tracking)  # before TensorFlow is imported: an unreachable server is told in seconds
            return command.function()(cfg)

    @hydra.main(config_path=str(CONF_DIR), config_name=command.config_name, version_base="1.3")
    def app(cfg: Any) -> Any:
        return _guarded(job, cfg)

    return app


def _plain_command(command: Command, rest: List[str]) -> int:
    """A command whose arguments argparse reads (its config comes from a past run, or from overrides)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.errors import DiskFull, PipelineError

    try:
        return int(command.function()(rest) or 0)
    except HydraException as e:
        _error(_hydra_message(e, command.name))
        return 2
    except (PipelineError, OmegaConfBaseException) as e:
        _error(first_line(e))
        return EXIT_DISK_FULL if isinstance(e, DiskFull) else 2
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            raise
        print("interrupted", file=sys.stderr)
        return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the open MLflow runs are marked KILLED on the way out."""


#: Modules inside which a signal is not raised: an exception raised in the middle of a write to a
#: SQLite store can leave its connection holding the database's lock, and closing the runs KILLED
#: then waits for it and fails ("database is locked", a traceback, runs left RUNNING).
_DEFERRED_IN = ("sqlite3", "sqlalchemy")
#: How long a signal waits for a database call to end before it is raised inside it anyway (a
#: database server that does not answer must not make Ctrl-C wait for its connection's timeout).
DEFER_AT_MOST_S = 5.0
#: When each signal that is waiting was first received.
_waiting: Dict[int, float] = {}


def _in_store_call(frame: Any) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_DEFERRED_IN):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated`, as soon as the main thread
    is outside a database call: inside one, the same signal is sent again 50 ms later, for at most
    :data:`DEFER_AT_MOST_S`."""
    import signal
    import threading
    import time

    first = _waiting.setdefault(signum, time.monotonic())
    if _in_store_call(frame) and time.monotonic() - first < DEFER_AT_MOST_S:
        again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        again.daemon = True
        again.start()
        return
    _waiting.pop(signum, None)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


#: What a command sets in the environment for itself (Hydra's errors raised, not printed; the
#: libraries' start-up lines hushed, or shown with --verbose; MLflow's retries; a worker's oracle;
#: the shell's completion line), put back as it was when the command ends.
OWN_ENV = ("HYDRA_FULL_ERROR", quiet.VERBOSE_ENV, *quiet.QUIET_ENV, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
           "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID", "PIPELINE_CHIEF_PID", "COMP_LINE")


@contextlib.contextmanager
def _left_as_found() -> Iterator[None]:
    """A program that calls :func:`main` (a notebook, a script running several commands) gets back
    its ``sys.argv``, the variables of :data:`OWN_ENV` and its root logger (level and handlers: the
    job's log file, which Hydra's logging set-up adds, closed), so that each call behaves as the first."""
    argv, env = list(sys.argv), {name: os.environ.get(name) for name in OWN_ENV}
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        sys.argv = argv
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        for handler in [h for h in handlers if h not in root.handlers]:
            root.addHandler(handler)
        root.setLevel(level)


def main(argv: Optional[List[str]] = None) -> int:
    """The console script. SIGTERM stops like Ctrl-C (runs KILLED), exiting 143 instead of 130;
    neither is raised inside a database call (:func:`_interrupt`)."""
    import signal

    previous = {}
    # Ctrl-C only where Python's own handler has it (a shell can start a command with it ignored)
    for signum in ((signal.SIGINT,) if signal.getsignal(signal.SIGINT) is signal.default_int_handler else ()) + (signal.SIGTERM,):
        try:
            previous[signum] = signal.signal(signum, _interrupt)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        # Python's collector kept off TensorFlow's objects (pipeline/heap.py); absl's log lines on this
        # command's stderr, which Hydra's logging set-up then does not close
        with _left_as_found(), heap.command(), quiet.absl_on_this_stderr():
            return _main(argv)
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe (a socket, a subprocess): not the user's reader
        # the reader of stdout stopped (`pipeline train --help | head`): a quiet end, as other tools make
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit fails no more
        return 0
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll's POLLERR on its write end)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a notebook's, captured), no poll
        return False


def _local_conf(rest: List[str]) -> List[str]:
    """Hydra's arguments, with ``./conf`` (the directory's own configs: a dataset of its own, a
    changed default) searched before the pipeline's, as ``--config-dir conf`` would, unless a
    config directory is given or ``./conf`` is the pipeline's own."""
    from pathlib import Path

    from pipeline.config import CONF_DIR

    local = Path("conf").resolve()
    given = any(a in ("--config-dir", "-cd") or a.startswith(("--config-dir=", "-cd=")) for a in rest)
    if given or not local.is_dir() or local == CONF_DIR.resolve():
        return rest
    return ["--config-dir", str(local), *rest]


SHELL_COMPLETION = ("-sc", "--shell-completion")
#: Hydra's own command-line flags (``pipeline train --help`` lists them); those without a value
#: may stand anywhere on the line: ``pipeline train seed=1,2 -m`` is a multirun.
HYDRA_SWITCHES = ("-m", "--multirun", "-r", "--run", "--resolve")
HYDRA_FLAGS = (*HYDRA_SWITCHES, "-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-p", "--package",
               *SHELL_COMPLETION, "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
               "--experimental-rerun", "-i", "--info")

#: The shells Hydra completes for (its completion plugins).
COMPLETION_SHELLS = ("bash", "fish", "zsh")
#: Hydra's flags that take a value (the long name; ``--info``'s is optional), and the values of those
#: that have a fixed set: refused in one line here, where Hydra's parser printed its usage text.
VALUED = {"-c": "--cfg", "--cfg": "--cfg", "-i": "--info", "--info": "--info", "-p": "--package", "--package": "--package",
          "-cp": "--config-path", "--config-path": "--config-path", "-cn": "--config-name", "--config-name": "--config-name",
          "-cd": "--config-dir", "--config-dir": "--config-dir", "--experimental-rerun": "--experimental-rerun"}
CHOICES = {"--cfg": ("job", "hydra", "all"), "--info": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")}

#: What Hydra does with the line, one at a time.
MODES = {"--run": ("-r", "--run"), "--multirun": ("-m", "--multirun"), "--cfg": ("-c", "--cfg"), "--info": ("-i", "--info"),
         "--shell-completion": SHELL_COMPLETION}


def _hydra_line(name: str, rest: List[str]) -> List[str]:
    """The arguments as Hydra's parser takes them: its switches first (argparse refuses an
    override after one), and an option it does not have refused in one line."""
    import difflib

    for arg in rest:
        flag = arg.split("=")[0]
        if arg.startswith("-") and flag not in HYDRA_FLAGS:
            near = difflib.get_close_matches(flag, HYDRA_FLAGS, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"`pipeline {name} --help` lists them"
            raise UsageError(f"pipeline {name} has no option {flag!r}; {hint}")
    plain = [a for a in rest if a not in HYDRA_SWITCHES]  # as Hydra's parser gets them: the switches first
    for i, arg in enumerate(plain):
        flag, eq, value = arg.partition("=")
        if flag not in VALUED:
            continue
        long = VALUED[flag]
        given: Optional[str] = value if eq else (plain[i + 1] if i + 1 < len(plain) and not plain[i + 1].startswith("-") else None)
        if given is None and long != "--info":
            raise UsageError(f"pipeline {name}: {flag} needs a value")
        if given is not None and long in CHOICES and given not in CHOICES[long]:
            raise UsageError(f"pipeline {name}: {flag} takes one of {', '.join(CHOICES[long])}, not {given!r}")
        if long == "--experimental-rerun" and not os.path.isfile(str(given)):
            raise UsageError(f"pipeline {name}: --experimental-rerun {given}: no such file (Hydra's config.pickle of a "
                             "past job; `pipeline rerun RUN_ID` trains a recorded run again)")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in plain:
        if "=" in arg and not arg.startswith("-"):
            try:
                parser.parse_override(arg)
            except ValueError as e:  # Hydra's grammar takes it, Python does not: a number of over 4,300 digits
                raise UsageError(f"pipeline {name}: {shown(arg.split('=')[0])}: {first_line(e).split(';')[0]}") from None
            except Exception:  # noqa: BLE001 - the grammar's own errors: told with their hints as Hydra composes
                pass
    modes = {m for arg in rest for m in MODES if arg.split("=")[0] in MODES[m]}
    if len(modes) > 1:  # else a ValueError out of Hydra
        raise UsageError(f"pipeline {name} takes one of {', '.join(MODES)}, not {' and '.join(m for m in MODES if m in modes)}")
    return [*(a for a in rest if a in HYDRA_SWITCHES), *(a for a in rest if a not in HYDRA_SWITCHES)]


class UsageError(Exception):
    """A command line Hydra's parser would refuse with its usage text: told in one line instead."""


def _completion(args: List[str]) -> int:
    """Hydra's tab completion (``-sc install=bash|zsh|fish``, and the ``-sc query=...`` it installs)
    for ``pipeline <command> <overrides>``: the shell asks ``pipeline -sc query=bash`` with the whole
    line in ``COMP_LINE``; the command word is completed here, the overrides by that command's Hydra app."""
    option = next((a for a in args if "=" in a and a.split("=")[0] in ("install", "uninstall", "query")), "")
    if option and option.split("=", 1)[1] not in COMPLETION_SHELLS:  # else Hydra's ValueError, a traceback
        _error(f"no shell completion for {option.split('=', 1)[1]!r}; {option.split('=')[0]}= takes {', '.join(COMPLETION_SHELLS)}")
        return 2
    command = COMMANDS["train"]
    if option.startswith("query="):
        line = os.environ.get("COMP_LINE", "")
        words = line.split()
        if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):  # completing the command itself
            typed = words[1] if len(words) == 2 else ""
            print(("\n" if option.endswith("fish") else " ").join(n for n in COMMANDS if n.startswith(typed)))
            return 0
        command = COMMANDS.get(words[1], command)
        if command.config_name is None or words[1] not in COMMANDS:
            return 0  # rerun, compare, predict: run ids and files, the shell's own completion
        # Hydra's query reads `<app> <overrides>`: the command word is taken out
        os.environ["COMP_LINE"] = re.sub(r"^(\s*\S+)\s+\S+", r"\1", line, count=1)
    sys.argv = ["pipeline", *_local_conf([]), *SHELL_COMPLETION[:1], option or "install=bash"]  # ./conf's datasets too
    from hydra.errors import HydraException

    try:
        _hydra_app(command)()
    except HydraException as e:
        _error(_hydra_message(e, command.name))
        return 2
    return 0


def _main(argv: Optional[List[str]] = None) -> int:
    # before anything imports TensorFlow: its start-up lines are silenced unless --verbose
    args = quiet.configure(sys.argv[1:] if argv is None else list(argv))
    if any(a in SHELL_COMPLETION for a in args[:2]):  # `pipeline -sc ...`, `pipeline train -sc ...`
        return _completion(args)
    if not args:  # a command is missing: the usage, on stderr, and the status of a usage error
        print(USAGE, file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        _error(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
        return 2
    command = COMMANDS[name]
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # set but empty: unset, as MLflow reads it
        if not os.environ.get(variable, "x").strip():
            del os.environ[variable]
    if command.config_name is None:
        return _plain_command(command, rest)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra then raises instead of printing; a user's own setting keeps the full trace.
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        rest = _hydra_line(name, rest)
    except UsageError as e:
        _error(e)
        return 2
    sys.argv = [f"pipeline {name}", *_local_conf(rest)]
    from pipeline import sweep
    from pipeline.errors import DiskFull, PipelineError
    from pipeline.validate import Refused

    try:
        _hydra_app(command)()
    except Refused as e:  # refused before the job's directory, store or project was created
        if full_error:
            raise e.error from None
        told = first_line(e.error) if isinstance(e.error, PipelineError) else _hydra_message(e.error, name)
        _error(told + (f" (job {' '.join(e.job)})" if e.job else ""))
        return 2
    except Terminated:
        sweep.abandon("KILLED")
        raise
    except KeyboardInterrupt:
        sweep.abandon("KILLED")
        print("interrupted", file=sys.stderr)
        return 130
    except (HydraException, OmegaConfBaseException, PipelineError) as e:
        sweep.abandon("FAILED")
        if full_error:
            raise
        _error(_hydra_message(e, name))
        return EXIT_DISK_FULL if isinstance(e, DiskFull) else 2
    except BaseException as e:  # a job's exit status (sys.exit), or a crash: the sweep's parent says so
        sweep.abandon("FAILED")
        full = _disk_full(e)
        if full is None or full_error:
            raise
        _error(first_line(full))  # Hydra's own files (.hydra/, the job's log)
        return EXIT_DISK_FULL
    return 0


def _disk_full(error: BaseException) -> Any:
    from pipeline.diskfull import full_disk

    return full_disk(error) if isinstance(error, Exception) else None


if __name__ == "__main__":
    sys.exit(main())
