"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


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
