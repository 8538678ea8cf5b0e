"""The grammar of ``/relay``: text as typed in Slack → one command value.

Slack's message box turns straight quotes into curly ones, so both are
accepted; anything else that does not parse is refused with the right usage,
before anything is looked up or started.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from bot.errors import CommandInvalid

USAGE = {
    "help": "/relay help",
    "list": "/relay list",
    "run": "/relay run FLOW name=value …",
    "status": "/relay status [RUN]",
    "cancel": "/relay cancel RUN",
    "retry": "/relay retry RUN",
    "approvals": "/relay approvals",
}

_DOUBLE = '"\u201c\u201d'
_OPEN_SINGLE = "'\u2018"
_APOSTROPHE = "\u2019"


def _straighten(text: str) -> str:
    """Slack's curly quotes as the straight ones shlex knows, apostrophes kept as text.

    Slack curls a quote that opens a word into a left quotation mark and every
    other one into a right one; so a right single mark closes a single quote
    only when one is open, and is otherwise an apostrophe (``note=don't`` as
    typed), which must not start a quote.
    """
    out: list[str] = []
    quote = ""
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\" and quote != "'":
            out.append(char)
            escaped = True
        elif quote == '"':
            closing = char in _DOUBLE
            out.append('"' if closing else "'" if char in _OPEN_SINGLE + _APOSTROPHE else char)
            quote = "" if closing else quote
        elif quote == "'":
            closing = char in "'" + _APOSTROPHE
            out.append("'" if closing else char)
            quote = "" if closing else quote
        elif char in _DOUBLE:
            out.append('"')
            quote = '"'
        elif char in _OPEN_SINGLE:
            out.append("'")
            quote = "'"
        elif char == _APOSTROPHE:
            out.append("\\'")
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class Help:
    """Show every subcommand."""


@dataclass(frozen=True)
class ListFlows:
    """Flows the user may run."""


@dataclass(frozen=True)
class RunFlow:
    """Start ``flow`` with ``name=value`` arguments as typed (checked later)."""

    flow: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status:
    """One run's status, or the user's recent runs."""

    run: str | None = None


@dataclass(frozen=True)
class CancelRun:
    """Cancel a run."""

    run: str


@dataclass(frozen=True)
class RetryRun:
    """Retry a failed run from its failed step."""

    run: str


@dataclass(frozen=True)
class Approvals:
    """Approvals waiting for the user."""


Command = Help | ListFlows | RunFlow | Status | CancelRun | RetryRun | Approvals


def parse(text: str) -> Command:
    """Parse what followed ``/relay``; raises CommandInvalid with the usage to show."""
    try:
        words = shlex.split(_straighten(text))
    except ValueError:
        raise CommandInvalid(
            "a quote is not closed", usage='/relay run FLOW name="a value with spaces"'
        ) from None
    if not words:
        return Help()
    verb, rest = words[0].lower(), words[1:]
    if verb in ("help", "list", "approvals"):
        _no_more(verb, rest)
        return Help() if verb == "help" else ListFlows() if verb == "list" else Approvals()
    if verb == "run":
        if not rest:
            raise CommandInvalid("say which flow to run", usage=USAGE["run"])
        return RunFlow(flow=rest[0], args=tuple(rest[1:]))
    if verb == "status":
        if len(rest) > 1:
            raise CommandInvalid("give at most one run id", usage=USAGE["status"])
        return Status(run=rest[0] if rest else None)
    if verb in ("cancel", "retry"):
        if len(rest) != 1:
            raise CommandInvalid("give exactly one run id", usage=USAGE[verb])
        return CancelRun(run=rest[0]) if verb == "cancel" else RetryRun(run=rest[0])
    known = ", ".join(USAGE)
    raise CommandInvalid(f"`{verb}` is not a Relay command (known: {known})", usage=USAGE["help"])


def _no_more(verb: str, rest: list[str]) -> None:
    if rest:
        raise CommandInvalid(f"`{verb}` takes no arguments", usage=USAGE[verb])
