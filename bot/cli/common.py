"""What every ``relay`` sub-command shares: exit codes and the usage error."""

from __future__ import annotations

import argparse

from bot.errors import (
    ConfigError,
    FlowNotFound,
    InputInvalid,
    RelayError,
    RunNotFound,
    StepNotFound,
)

EXIT_OK = 0
EXIT_FAILED = 1
"""The command ran and found a failure (a broken flow, a failed run)."""
EXIT_USAGE = 2
"""The command could not run as asked (bad path, unknown flow, bad inputs)."""
EXIT_INTERRUPTED = 130

Subparsers = argparse._SubParsersAction
"""What ``register(subparsers)`` receives from ``relay``'s parser (argparse names it privately)."""


class UsageError(RelayError):
    """The command line asks for something that does not exist."""


USAGE_ERRORS: tuple[type[RelayError], ...] = (
    UsageError,
    ConfigError,
    FlowNotFound,
    InputInvalid,
    RunNotFound,
    StepNotFound,
)
"""Errors in what was asked rather than in what happened: they exit with EXIT_USAGE."""


def command_parser(
    subparsers: Subparsers[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    examples: str,
) -> argparse.ArgumentParser:
    """A sub-command parser whose ``--help`` ends with worked examples."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def at_least_one(text: str) -> int:
    """An argparse ``type`` for counts: a bad one is a usage error naming the value."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return number
