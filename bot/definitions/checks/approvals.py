"""Approvals that nobody could ever satisfy, and approval cards that show wrong things.

Only what can be proven from the file is reported: with user groups involved,
membership is known only at run time, so those levels are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator

from bot.definitions.checks.context import CheckContext
from bot.definitions.models import ApprovalLevel, ApprovalStep, Path
from bot.definitions.problems import Problem, suggestion


def _levels(path: Path, step: ApprovalStep) -> Iterator[tuple[Path, ApprovalLevel]]:
    for depth, level in enumerate(step.levels()):
        yield (*path, *("escalate",) * depth), level


def _listed_users(level: ApprovalLevel) -> set[str] | None:
    """Everyone who may decide at this level, when the file alone says who that is."""
    if level.quorum or level.approvers is None or level.approvers.groups:
        return None
    return set(level.approvers.users)


def _approvals(ctx: CheckContext) -> Iterator[tuple[Path, ApprovalStep]]:
    for path, step in ctx.flow.walk():
        if isinstance(step, ApprovalStep):
            yield path, step


def impossible_approvals(ctx: CheckContext) -> Iterator[Problem]:
    """``required`` larger than the people listed, per level and per quorum."""
    for path, step in _approvals(ctx):
        for level_path, level in _levels(path, step):
            users = _listed_users(level)
            if users is not None and level.required > len(users):
                yield ctx.problem(
                    (*level_path, "required"),
                    "approval-impossible",
                    f"step `{step.id}` needs {level.required} approvals "
                    f"but lists only {len(users)} approver{'s' if len(users) != 1 else ''}",
                    f"lower `required` to at most {len(users)}, or add approvers or a group",
                )
            for index, quorum in enumerate(level.quorum):
                listed = set(quorum.users)
                if quorum.group is None and quorum.required > len(listed):
                    yield ctx.problem(
                        (*level_path, "quorum", index, "required"),
                        "approval-impossible",
                        f"a quorum of step `{step.id}` needs {quorum.required} approvals "
                        f"but lists only {len(listed)} user{'s' if len(listed) != 1 else ''}",
                        f"lower `required` to at most {len(listed)}, or add users or a `group`",
                    )


def approver_exclusions(ctx: CheckContext) -> Iterator[Problem]:
    """``exclude_approvers_of`` must name an approval step and leave enough people."""
    approvals = dict((step.id, step) for _, step in _approvals(ctx))
    ids = [step.id for _, step in ctx.flow.walk()]
    for path, step in _approvals(ctx):
        for index, other_id in enumerate(step.exclude_approvers_of):
            where = (*path, "exclude_approvers_of", index)
            if other_id not in ids:
                yield ctx.problem(
                    where,
                    "unknown-step",
                    f"`exclude_approvers_of` names `{other_id}`, which is not a step"
                    f"{suggestion(other_id, approvals)}",
                    "name the `id` of an approval step in this flow",
                )
            elif other_id == step.id or other_id not in approvals:
                what = "this step itself" if other_id == step.id else "not an approval step"
                yield ctx.problem(
                    where,
                    "exclude-not-approval",
                    f"`exclude_approvers_of` names `{other_id}`, which is {what}",
                    "name an earlier approval step whose approvers may not approve this one",
                )
            else:
                yield from _exclusion_impossible(ctx, path, step, approvals[other_id])


def _exclusion_impossible(
    ctx: CheckContext, path: Path, step: ApprovalStep, other: ApprovalStep
) -> Iterator[Problem]:
    other_users = _listed_users(other)
    if other_users is None or other.escalate is not None:
        return
    for level_path, level in _levels(path, step):
        users = _listed_users(level)
        if users is None:
            continue
        # Even if `other` was approved by the people least useful here, this many
        # of this level's approvers must have approved `other` and are excluded.
        forced = max(0, other.required - len(other_users - users))
        left = max(0, len(users) - forced)
        if left < level.required:
            yield ctx.problem(
                (*level_path, "required"),
                "exclusion-impossible",
                f"step `{step.id}` needs {level.required} approvals from people who did not "
                f"approve `{other.id}`, but at most {left} of its approvers can be left",
                f"add approvers who are not approvers of `{other.id}`, or lower `required`",
            )


def approval_forms(ctx: CheckContext) -> Iterator[Problem]:
    """``show_inputs`` must name inputs, and form ``fields`` need distinct ids."""
    for path, step in _approvals(ctx):
        for index, name in enumerate(step.show_inputs):
            if name not in ctx.flow.inputs:
                yield ctx.problem(
                    (*path, "show_inputs", index),
                    "unknown-input",
                    f"`show_inputs` names `{name}`, which is not an input of this flow"
                    f"{suggestion(name, ctx.flow.inputs)}",
                    "list names declared under `inputs:`",
                )
        seen: set[str] = set()
        for index, form_field in enumerate(step.fields):
            if form_field.id in seen:
                yield ctx.problem(
                    (*path, "fields", index, "id"),
                    "duplicate-field-id",
                    f"step `{step.id}` has two fields with the id `{form_field.id}`",
                    "give each field its own id: it keys the value in the step's output",
                )
            seen.add(form_field.id)
