"""``relay run --dry-run``: what a run would do, computed without calling anything.

Inputs are checked and templates rendered as far as the inputs allow; a value
that needs an earlier step's output is shown as the template it will be. Secrets
are rendered as ``***``. Nothing is written and no request is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.definitions.inputs import coerce_inputs, mask_inputs
from bot.definitions.models import (
    ApprovalStep,
    FlowDef,
    HttpStep,
    NotifyStep,
    ParallelStep,
    Step,
    SubFlowStep,
    WaitStep,
)
from bot.definitions.templating import Scope, evaluate, render
from bot.definitions.values import format_duration as describe_duration
from bot.errors import RelayError
from bot.redact import Redactor
from bot.steps.http import prepare


def _scope(flow: FlowDef, inputs: Mapping[str, Any]) -> Scope:
    return Scope(
        inputs=inputs,
        run={"id": "(dry run)", "flow": flow.name, "started_by": "you", "source": {}},
        secrets={name: "***" for name in flow.secrets},
    )


def _try(source: str, scope: Scope) -> str:
    try:
        return render(source, scope)
    except RelayError:
        return f"{source}  (filled in at run time)"


def _when(step: Step, scope: Scope) -> str | None:
    if step.when is None:
        return None
    try:
        return "runs" if evaluate(step.when, scope) else "skipped: condition is false"
    except RelayError:
        return f"runs if {step.when} (decided at run time)"


def _services(flow: FlowDef, environ: Mapping[str, str]) -> dict[str, str]:
    """Base URLs; an unset variable becomes a visible placeholder host, so the rest renders."""
    found = {}
    for name, service in flow.services.items():
        url = service.url or environ.get(service.env or "")
        found[name] = url or f"http://{(service.env or name).lower().replace('_', '-')}.unset"
    return found


def _describe(
    step: Step, scope: Scope, services: dict[str, str], redactor: Redactor, depth: int
) -> list[str]:
    pad = "  " * depth
    lines = [f"{pad}- {step.id} ({step.kind})" + (f": {step.title}" if step.title else "")]
    verdict = _when(step, scope)
    if verdict:
        lines.append(f"{pad}    when: {verdict}")
    if isinstance(step, HttpStep):
        try:
            request = prepare(step, scope=scope, services=services, idempotency_key="(per run)")
            lines.extend(f"{pad}    {line}" for line in request.display(redactor).splitlines())
        except RelayError:
            target = step.url or f"{services.get(step.service or '', '?')}{step.path}"
            lines.append(f"{pad}    {step.method} {target}  (filled in at run time)")
    elif isinstance(step, ApprovalStep):
        lines.append(f"{pad}    asks: {_try(step.question, scope)}")
        for number, level in enumerate(step.levels()):
            who = (
                [*level.approvers.users, *(f"@{g}" for g in level.approvers.groups)]
                if level.approvers
                else [f"{q.required} from {q.group or ','.join(q.users)}" for q in level.quorum]
            )
            timeout = (
                f", times out after {describe_duration(level.timeout)}" if level.timeout else ""
            )
            label = "who decides" if number == 0 else f"then (escalation {number})"
            lines.append(f"{pad}    {label}: {', '.join(who)}, {level.required} needed{timeout}")
    elif isinstance(step, NotifyStep):
        target = step.channel or step.user or "the run's thread"
        lines.append(f"{pad}    to {target}: {_try(step.text, scope)}")
    elif isinstance(step, WaitStep):
        lines.append(
            f"{pad}    waits {describe_duration(step.duration)}"
            if step.duration
            else f"{pad}    waits until {_try(step.until or '', scope)}"
        )
    elif isinstance(step, SubFlowStep):
        lines.append(f"{pad}    runs flow {step.flow}")
    elif isinstance(step, ParallelStep):
        for name, branch in step.branches.items():
            lines.append(f"{pad}    branch {name}:")
            for child in branch:
                lines.extend(_describe(child, scope, services, redactor, depth + 2))
    if getattr(step, "for_each", None) is not None:
        lines.append(f"{pad}    once per item of {step.for_each.items!r}")  # type: ignore[union-attr]
    for undo in step.compensate:
        lines.append(f"{pad}    undone by:")
        lines.extend(_describe(undo, scope, services, redactor, depth + 2))
    return lines


def describe_plan(
    flow: FlowDef, raw_inputs: Mapping[str, Any], *, environ: Mapping[str, str]
) -> str:
    """The plan of a run of ``flow`` with these inputs, as text."""
    inputs = coerce_inputs(flow, raw_inputs)
    scope = _scope(flow, inputs)
    services = _services(flow, environ)
    redactor = Redactor(environ[name] for name in flow.secrets if environ.get(name))
    lines = [f"Dry run of {flow.name}: nothing will be called or written.", ""]
    lines.append(f"inputs: {mask_inputs(flow, inputs)}")
    lines.append("steps:")
    for step in flow.steps:
        lines.extend(_describe(step, scope, services, redactor, 1))
    if flow.on_failure:
        lines.append("on failure:")
        for step in flow.on_failure:
            lines.extend(_describe(step, scope, services, redactor, 1))
    return "\n".join(lines)
