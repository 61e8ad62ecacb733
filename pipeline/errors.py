"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def first_line(error: BaseException) -> str:
    """An error's message, first line only; its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def shown(value: object) -> str:
    """A value from the user's data, fit for a one-line message: control characters escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(value))


class PipelineError(Exception):
    """A mistake in the user's input or environment, explained in one line."""


class ConfigError(PipelineError):
    """A config value that composes but cannot work (e.g. an unknown optimizer)."""


class DataError(PipelineError):
    """Data that is missing, empty, undecodable or unusable for classification."""


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be reached or used."""


class UsageError(PipelineError):
    """A command line that does not parse (argparse's message, on one line)."""


class TrackingLost(TrackingError):
    """The tracking server went away mid-run: MLflow's retries did not reach it (``retried``),
    or it died while answering."""

    retried: bool = True


class DiskFull(PipelineError):
    """A write that failed for want of space: a full disk, a used-up quota or the file size limit
    (``pipeline.diskfull`` tells them from other failures). Exit status 74; what finished is kept,
    and the same command goes on once there is space. ``unclosed``: runs the full store would not
    let be closed (the next run on this machine, in the same experiment, closes them)."""

    def __init__(self, what: str, why: str, remedy: str = "free some space") -> None:
        super().__init__(what, why)
        self.what, self.why, self.remedy = what, why, remedy
        self.unclosed: list = []

    def __str__(self) -> str:
        text = f"could not write {self.what}: {self.why}; {self.remedy}, then run the same command again (a search goes on where it stopped)"
        if self.unclosed:
            runs = ", ".join(self.unclosed)
            text += f"; the full store could not record the end of run(s) {runs}, left RUNNING until the same command runs again here, which closes them"
        return text
