"""The ``relay`` command line.

Each sub-command module exposes ``register(subparsers)``, which adds its
parsers and sets ``func`` (``Namespace -> exit code``) on each. Adding a
command is adding its module to ``COMMANDS``. Errors Relay raises on purpose
print as one ``relay: ...`` line; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bot import __version__
from bot.cli import demo, flows, runs, serve
from bot.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    USAGE_ERRORS,
    Subparsers,
)
from bot.errors import RelayError

COMMANDS: tuple[Callable[[Subparsers[argparse.ArgumentParser]], None], ...] = (
    demo.register,
    runs.register,
    flows.register,
    serve.register,
)

DESCRIPTION = """\
Relay runs chat-ops flows from Slack: HTTP calls, approvals and notifications
described in YAML, run durably so that restarts and outages never lose a run."""


def build_parser() -> argparse.ArgumentParser:
    """The ``relay`` parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="relay",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``relay`` with ``argv`` (default: the process arguments); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except RelayError as exc:
        print(f"relay: {exc.user_message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILED
    except KeyboardInterrupt:
        print("relay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
