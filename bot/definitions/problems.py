"""What is wrong with a flow file, where, and how to fix it.

Every stage that reads a flow (YAML reading, model validation, cross-field and
cross-flow checks) reports through the same ``Problem`` so that ``relay
validate``, the bot's start-up log and the tests all speak one language: a
stable ``code`` for machines, a ``message`` and a one-sentence ``fix`` for people.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with a flow file, pinned to a line and column (both 1-based)."""

    file: str
    """The path as it was given, so printed paths match what the user typed."""
    line: int
    column: int
    severity: Severity
    code: str
    """A short stable slug (``unknown-key``) that tools and docs can key on."""
    message: str
    fix: str

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        """``path:line:col: error: message (fix)``, the shape editors and CI parse."""
        return (
            f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message} ({self.fix})"
        )

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.code, self.message)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``word``, if one is close enough."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggestion(word: str, choices: Iterable[str]) -> str:
    """``": did you mean `x`?"`` or nothing, to append to a message."""
    match = did_you_mean(word, choices)
    return f": did you mean `{match}`?" if match else ""


def quoted_list(names: Iterable[str]) -> str:
    """``a, b, c`` with each name in backticks, for messages listing what is allowed."""
    return ", ".join(f"`{name}`" for name in names)


def has_errors(problems: Iterable[Problem]) -> bool:
    """Whether any of ``problems`` is an error (warnings never block a flow)."""
    return any(problem.is_error for problem in problems)
