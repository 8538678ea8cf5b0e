"""Checks across flows, run once every file is loaded.

A sub-flow step must call a flow that loaded, with inputs that fit it, and
flows must not call each other in a circle.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from bot.definitions.checks.context import CheckContext
from bot.definitions.checks.given_inputs import Wording, given_inputs
from bot.definitions.models import FlowDef, Path, SubFlowStep
from bot.definitions.problems import Problem, suggestion


def check_catalog(flows: Mapping[str, CheckContext], broken: Collection[str]) -> list[Problem]:
    """Problems of every flow in ``flows`` that come from the flows it calls.

    ``broken`` names flows whose files have errors, so a call to one of them
    says so instead of claiming the flow does not exist.
    """
    problems: list[Problem] = []
    reach = {name: _reachable(name, flows) for name in flows}
    for name, ctx in flows.items():
        for path, step in _calls(ctx.flow):
            callee = flows.get(step.flow)
            if step.flow == name:
                continue
            if callee is None:
                problems.append(_missing_flow(ctx, path, step, flows, broken))
            elif name in reach[step.flow]:
                problems.append(
                    ctx.problem(
                        (*path, "flow"),
                        "flow-cycle",
                        f"step `{step.id}` calls `{step.flow}`, which in turn calls `{name}` "
                        "again, so runs would never end",
                        "break the cycle: one of these flows must stop calling the other",
                    )
                )
            else:
                problems.extend(_input_problems(ctx, path, step, callee.flow))
    return problems


def _calls(flow: FlowDef) -> Iterator[tuple[Path, SubFlowStep]]:
    for path, step in flow.walk():
        if isinstance(step, SubFlowStep):
            yield path, step


def _reachable(start: str, flows: Mapping[str, CheckContext]) -> set[str]:
    """Every flow that runs of ``start`` may start, directly or through others."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        current = flows.get(pending.pop())
        if current is None:
            continue
        for _, step in _calls(current.flow):
            if step.flow not in seen:
                seen.add(step.flow)
                pending.append(step.flow)
    return seen


def _missing_flow(
    ctx: CheckContext,
    path: Path,
    step: SubFlowStep,
    flows: Mapping[str, CheckContext],
    broken: Collection[str],
) -> Problem:
    if step.flow in broken:
        return ctx.problem(
            (*path, "flow"),
            "broken-flow",
            f"step `{step.id}` calls `{step.flow}`, which has errors and is not loaded",
            f"fix the errors reported for `{step.flow}`",
            value=True,
        )
    known = [*flows, *broken]
    return ctx.problem(
        (*path, "flow"),
        "unknown-flow",
        f"step `{step.id}` calls the flow `{step.flow}`, which does not exist"
        f"{suggestion(step.flow, known)}",
        "use the `name:` of a flow file in the same directory",
        value=True,
    )


def _input_problems(
    ctx: CheckContext, path: Path, step: SubFlowStep, callee: FlowDef
) -> Iterator[Problem]:
    wording = Wording(
        missing=lambda name: (
            f"step `{step.id}` does not give `{callee.name}` its required input `{name}`",
            f"add `{name}:` under this step's `inputs:`",
        ),
        unknown=lambda name: (
            f"`{callee.name}` has no input `{name}`{suggestion(name, callee.inputs)}",
            f"remove it, or use one of the inputs of `{callee.name}`",
        ),
        bad_value=lambda name, exc: (
            f"the value for `{name}` does not fit the input of `{callee.name}`: {exc}",
            f"give a value that fits the input `{name}` of `{callee.name}`",
        ),
    )
    yield from given_inputs(
        ctx,
        path,
        step.inputs,
        callee,
        missing_at=(*path, "inputs") if step.inputs else path,
        wording=wording,
    )
