"""Inputs handed to a flow by someone other than a person: a schedule or a calling flow.

Nobody is there to be asked for a missing value, so the same three rules apply
to both: every required input is given, no unknown name is given, and a literal
value fits its input. Only the wording differs, so each caller brings its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bot.definitions.checks.context import CheckContext, is_template
from bot.definitions.inputs import coerce_value
from bot.definitions.models import FlowDef, Path
from bot.definitions.problems import Problem

Words = tuple[str, str]
"""A problem's message and its fix."""


@dataclass(frozen=True, kw_only=True)
class Wording:
    """How one kind of caller words each rule."""

    missing: Callable[[str], Words]
    unknown: Callable[[str], Words]
    bad_value: Callable[[str, ValueError], Words]


def given_inputs(
    ctx: CheckContext,
    path: Path,
    given: Mapping[str, Any],
    target: FlowDef,
    *,
    missing_at: Path,
    wording: Wording,
) -> Iterator[Problem]:
    """Problems with ``given`` (found at ``path + ("inputs", name)``) as inputs of ``target``."""
    for name, definition in target.inputs.items():
        if definition.is_required and name not in given:
            yield ctx.problem(missing_at, "missing-input", *wording.missing(name))
    for name, value in given.items():
        where = (*path, "inputs", name)
        if name not in target.inputs:
            yield ctx.problem(where, "unknown-input", *wording.unknown(name))
        elif not (isinstance(value, str) and is_template(value)):
            try:
                coerce_value(target.inputs[name], value)
            except ValueError as exc:
                yield ctx.problem(where, "bad-input-value", *wording.bad_value(name, exc))
