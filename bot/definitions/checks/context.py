"""What every check receives, and the one way checks report a Problem."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bot.definitions.models import FlowDef, Path
from bot.definitions.problems import Problem, Severity
from bot.definitions.yaml_source import Mark, SourceMap


@dataclass(frozen=True, kw_only=True)
class CheckContext:
    """A valid flow with the positions of its file, so problems point at lines."""

    flow: FlowDef
    source: SourceMap
    file: str

    def problem(
        self,
        path: Path,
        code: str,
        message: str,
        fix: str,
        *,
        severity: Severity = "error",
        value: bool = False,
        mark: Mark | None = None,
    ) -> Problem:
        """A Problem at ``path`` (its key; its value with ``value=True``), or at ``mark``."""
        where = mark or self.source.locate(path, value=value)
        return Problem(
            file=self.file,
            line=where.line,
            column=where.column,
            severity=severity,
            code=code,
            message=message,
            fix=fix,
        )


def strings_in(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """Every string inside nested lists and mappings, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings_in(item, (*path, index))


def is_template(text: str) -> bool:
    """Whether Jinja would treat ``text`` as more than literal text."""
    return "{{" in text or "{%" in text or "{#" in text
