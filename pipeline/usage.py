"""Command lines that are not Hydra's (rerun, compare, predict): argparse, with a mistake said in one line."""

from __future__ import annotations

import argparse

from pipeline.errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake is a one-line `error:` (exit 2) rather than usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def argument_parser(prog: str, description: str, epilog: str = "") -> ArgumentParser:
    """The parser a plain command builds its arguments on."""
    return ArgumentParser(prog=prog, description=description, epilog=epilog or None,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
