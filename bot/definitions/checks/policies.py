"""Checks on durations, schedules, permissions and input defaults."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from bot.definitions.checks.context import CheckContext
from bot.definitions.checks.given_inputs import Wording, given_inputs
from bot.definitions.inputs import coerce_value
from bot.definitions.models import ApprovalStep, FlowDef, Path, RetryingStep, RetryPolicy
from bot.definitions.problems import Problem, suggestion
from bot.definitions.values import format_duration


def durations(ctx: CheckContext) -> Iterator[Problem]:
    """Timeouts that expire at once, reminders that never come, backoffs always capped."""
    flow = ctx.flow
    yield from _zero(ctx, ("defaults", "timeout"), flow.defaults.timeout, "timeout")
    yield from _backoff(ctx, ("defaults", "retry"), flow.defaults.retry)
    for path, step in flow.walk():
        if isinstance(step, RetryingStep):
            yield from _zero(ctx, (*path, "timeout"), step.timeout, "timeout")
            if step.retry is not None:
                yield from _backoff(ctx, (*path, "retry"), step.retry)
        if isinstance(step, ApprovalStep):
            for depth, level in enumerate(step.levels()):
                level_path = (*path, *("escalate",) * depth)
                yield from _zero(ctx, (*level_path, "timeout"), level.timeout, "timeout")
                yield from _zero(ctx, (*level_path, "remind_every"), level.remind_every, "reminder")
                remind, timeout = level.remind_every, level.timeout
                if remind and timeout and remind >= timeout:
                    yield ctx.problem(
                        (*level_path, "remind_every"),
                        "remind-after-timeout",
                        f"`remind_every` ({format_duration(remind)}) is not shorter than "
                        f"`timeout` ({format_duration(timeout)}), so no reminder is ever sent",
                        "make `remind_every` shorter than `timeout`, or remove it",
                    )


def _zero(ctx: CheckContext, path: Path, value: timedelta | None, what: str) -> Iterator[Problem]:
    if value is not None and value <= timedelta(0):
        key = str(path[-1])
        yield ctx.problem(
            path,
            "zero-duration",
            f"`{key}` is zero, so the {what} would fire at once",
            f"give `{key}` a positive duration like 30s or 1h, or remove it",
        )


def _backoff(ctx: CheckContext, path: Path, retry: RetryPolicy) -> Iterator[Problem]:
    if retry.backoff > retry.max_backoff:
        yield ctx.problem(
            (*path, "backoff"),
            "backoff-over-max",
            f"`backoff` ({format_duration(retry.backoff)}) is longer than `max_backoff` "
            f"({format_duration(retry.max_backoff)}), so every wait is capped",
            "make `backoff` shorter than `max_backoff`, or raise `max_backoff`",
        )


def _schedule_wording(schedule: str, flow: FlowDef) -> Wording:
    return Wording(
        missing=lambda name: (
            f"the schedule `{schedule}` does not give the required input `{name}`",
            f"add `{name}:` under this trigger's `inputs:`, or give the input a `default`",
        ),
        unknown=lambda name: (
            f"the schedule gives `{name}`, which is not an input of this flow"
            f"{suggestion(name, flow.inputs)}",
            "remove it, or declare it under `inputs:`",
        ),
        bad_value=lambda name, exc: (
            f"the schedule's value for `{name}` does not fit the input: {exc}",
            f"give a value that fits the input `{name}`",
        ),
    )


def triggers(ctx: CheckContext) -> Iterator[Problem]:
    """A schedule starts runs with nobody to ask, so it must give every required input."""
    flow = ctx.flow
    for index, trigger in enumerate(flow.triggers):
        path: Path = ("triggers", index)
        yield from given_inputs(
            ctx,
            path,
            trigger.inputs,
            flow,
            missing_at=(*path, "inputs") if ctx.source.has((*path, "inputs")) else path,
            wording=_schedule_wording(trigger.schedule, flow),
        )


def permissions(ctx: CheckContext) -> Iterator[Problem]:
    """Say who may run a flow; an audience listing nobody locks everyone out."""
    granted = ctx.flow.permissions
    if granted is None or granted.run is None:
        where: Path = ("permissions",) if granted is not None else ("name",)
        yield ctx.problem(
            where,
            "no-run-permission",
            "anyone in the workspace may run this flow",
            "add `permissions.run` listing the users, groups or channels who may run it",
            severity="warning",
        )
    if granted is None:
        return
    for action, audience in (("run", granted.run), ("operate", granted.operate)):
        if audience is not None and audience.is_empty:
            yield ctx.problem(
                ("permissions", action),
                "empty-audience",
                f"`permissions.{action}` lists nobody, so nobody could {action} this flow",
                "list `users`, `groups` or `channels`, or remove the key",
            )


def input_defaults(ctx: CheckContext) -> Iterator[Problem]:
    """A default is used without asking anyone, so it must pass the input's own rules."""
    for name, definition in ctx.flow.inputs.items():
        if definition.default is None:
            continue
        try:
            coerce_value(definition, definition.default)
        except ValueError as exc:
            yield ctx.problem(
                ("inputs", name, "default"),
                "bad-default",
                f"the default of `{name}` does not fit the input: {exc}",
                "change the default, or the input's type and limits",
            )
