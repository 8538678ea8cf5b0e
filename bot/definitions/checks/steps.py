"""Checks on the shape of the step tree: ids, conditions, compensation, self-calls."""

from __future__ import annotations

from collections.abc import Iterator

from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from bot.definitions.checks.context import CheckContext
from bot.definitions.models import SubFlowStep
from bot.definitions.problems import Problem
from bot.definitions.templating import parse
from bot.errors import TemplateError

# Only these nodes are folded: each is cheap and side-effect free on constants,
# so a hostile `when:` cannot make the checker allocate or loop.
_FOLDABLE = (
    nodes.Const,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.Compare,
    nodes.Operand,
    nodes.Neg,
    nodes.Pos,
    nodes.List,
    nodes.Tuple,
    nodes.Concat,
)
_FOLDING = nodes.EvalContext(SandboxedEnvironment())


def duplicate_step_ids(ctx: CheckContext) -> Iterator[Problem]:
    """Step ids key a run's checkpoints and templates, so each must be unique in the file."""
    first: dict[str, int] = {}
    for path, step in ctx.flow.walk():
        line = ctx.source.locate((*path, "id")).line
        if step.id in first:
            yield ctx.problem(
                (*path, "id"),
                "duplicate-step-id",
                f"the step id `{step.id}` is already used on line {first[step.id]}",
                "give each step its own id",
            )
        else:
            first[step.id] = line


def constant_when(ctx: CheckContext) -> Iterator[Problem]:
    """A ``when:`` that never changes is a mistake: the step never runs, or the test is noise."""
    for path, step in ctx.flow.walk():
        if step.when is None:
            continue
        value = _constant(step.when)
        if value is _UNKNOWN:
            continue
        if value:
            yield ctx.problem(
                (*path, "when"),
                "when-always-true",
                f"the `when:` of step `{step.id}` is always true",
                "remove `when:`",
                severity="warning",
            )
        else:
            yield ctx.problem(
                (*path, "when"),
                "when-always-false",
                f"the `when:` of step `{step.id}` is always false, so the step can never run",
                "fix the condition, or remove the step",
            )


_UNKNOWN = object()


def _constant(expression: str) -> object:
    """The value of ``expression`` if it is a constant, else ``_UNKNOWN``."""
    try:
        tree = parse(expression, expression=True)
    except TemplateError:
        return _UNKNOWN
    body = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(body, nodes.Output) or len(body.nodes) != 1:
        return _UNKNOWN
    expr = body.nodes[0]
    if not all(isinstance(node, _FOLDABLE) for node in (expr, *expr.find_all(nodes.Node))):
        return _UNKNOWN
    try:
        return expr.as_const(_FOLDING)
    except nodes.Impossible:
        return _UNKNOWN


def unused_compensate(ctx: CheckContext) -> Iterator[Problem]:
    """Compensation undoes the main line; steps run while failing are never undone."""
    for path, step in ctx.flow.walk():
        failing = path[0] == "on_failure" or "compensate" in path
        if step.compensate and failing:
            yield ctx.problem(
                (*path, "compensate"),
                "unused-compensate",
                f"step `{step.id}` runs during failure handling, so its `compensate` never runs",
                "remove `compensate:` from this step",
                severity="warning",
            )


def calls_itself(ctx: CheckContext) -> Iterator[Problem]:
    """A flow that starts itself would never finish (longer cycles are found per catalog)."""
    for path, step in ctx.flow.walk():
        if isinstance(step, SubFlowStep) and step.flow == ctx.flow.name:
            yield ctx.problem(
                (*path, "flow"),
                "flow-cycle",
                f"step `{step.id}` runs the flow `{step.flow}` itself, so runs would never end",
                "call a different flow, or use `for_each` to repeat work",
            )
