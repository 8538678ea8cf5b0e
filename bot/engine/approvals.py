"""Approval policy as pure functions: who may vote, and when the votes decide.

Kept apart from the machine so each rule (requester, four eyes, reasons, N of M,
per-group quorums) is one small function that tests exercise directly.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.definitions.models import ApprovalLevel, ApprovalStep, FieldType, Quorum
from bot.engine.records import Approval, Vote
from bot.engine.states import Decision


@dataclass(frozen=True)
class Progress:
    """How far an approval level has got, for the card: who approved, what is missing."""

    approved_by: tuple[str, ...]
    required: int
    missing: tuple[str, ...]
    """Human-readable remaining requirements, e.g. ``"1 from S0LEGAL"``."""


def current(approval: Approval, votes: Iterable[Vote]) -> list[Vote]:
    """The votes cast on this request of the approval, at any level.

    An operator's retry asks an approval again while the votes of the first
    request stay stored; they must neither count nor block their authors. The
    machine keeps every request's ``requested_at`` strictly after the votes
    before it, and every vote's ``at`` at or after its request, so time order
    tells the requests apart whatever the clocks of the workers say.
    """
    return [
        vote
        for vote in votes
        if vote.step_key == approval.step_key and vote.at >= approval.requested_at
    ]


def counted(approval: Approval, votes: Iterable[Vote]) -> list[Vote]:
    """The votes that count at the approval's current level (escalation starts afresh)."""
    return [vote for vote in current(approval, votes) if vote.level == approval.level]


def relevant_groups(level: ApprovalLevel) -> frozenset[str]:
    """The user groups whose membership decides eligibility at this level."""
    if level.quorum:
        return frozenset(q.group for q in level.quorum if q.group)
    return frozenset(level.approvers.groups if level.approvers else ())


def _matches(quorum: Quorum, voter: str, groups: Collection[str]) -> bool:
    return voter in quorum.users or (quorum.group is not None and quorum.group in groups)


def may_decide(level: ApprovalLevel, voter: str, groups: Collection[str]) -> bool:
    """Whether the voter is among this level's approvers (users or group members)."""
    if level.quorum:
        return any(_matches(q, voter, groups) for q in level.quorum)
    approvers = level.approvers
    if approvers is None:
        return False
    return voter in approvers.users or any(group in groups for group in approvers.groups)


def refusal(
    *,
    step: ApprovalStep,
    level: ApprovalLevel,
    voter: str,
    groups: Collection[str],
    decision: Decision,
    reason: str | None,
    fields: dict[str, Any],
    requester: str,
    votes_here: Sequence[Vote],
    approvers_elsewhere: dict[str, set[str]],
) -> str | None:
    """Why this vote cannot count, in words for the voter; None when it counts."""
    if not may_decide(level, voter, groups):
        return "you are not one of the approvers of this step"
    if voter == requester and not step.allow_requester:
        return "you started this run, so someone else has to decide"
    if any(vote.voter == voter for vote in votes_here):
        return "you have already answered this approval"
    for other, voters in approvers_elsewhere.items():
        if voter in voters:
            return f"you approved `{other}`, so a different person must approve this step"
    needs_reason = step.require_reason == "always" or (
        step.require_reason == "reject" and decision is Decision.REJECTED
    )
    if needs_reason and not (reason and reason.strip()):
        return f"a reason is required to {'reject' if decision is Decision.REJECTED else 'approve'}"
    if decision is Decision.APPROVED:
        return field_problem(step, fields)
    return None


def field_problem(step: ApprovalStep, fields: dict[str, Any]) -> str | None:
    """What is wrong with the values an approver filled in, if anything."""
    for spec in step.fields:
        value = fields.get(spec.id)
        if value is None or (isinstance(value, str) and not value.strip()):
            if spec.required:
                return f"`{spec.label}` is required"
            continue
        if spec.type is FieldType.INTEGER and not _is_integer(value):
            return f"`{spec.label}` must be an integer"
        if spec.type is FieldType.NUMBER and not _is_number(value):
            return f"`{spec.label}` must be a number"
    unknown = set(fields) - {spec.id for spec in step.fields}
    if unknown:
        return f"unknown field {sorted(unknown)[0]!r}"
    return None


def _is_integer(value: Any) -> bool:
    try:
        int(str(value))
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    # Finite only: NaN and infinities are not JSON, so they could not be stored
    # as the step's output (PostgreSQL's JSONB refuses them).
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def coerce_fields(step: ApprovalStep, fields: dict[str, Any]) -> dict[str, Any]:
    """The filled-in values typed as the step declares them (after ``field_problem`` passed)."""
    typed: dict[str, Any] = {}
    for spec in step.fields:
        value = fields.get(spec.id)
        if value is None or value == "":
            continue
        if spec.type is FieldType.INTEGER:
            typed[spec.id] = int(str(value))
        elif spec.type is FieldType.NUMBER:
            typed[spec.id] = float(value)
        else:
            typed[spec.id] = str(value)
    return typed


def _fill(quorums: Sequence[Quorum], voters: Sequence[tuple[str, Collection[str]]]) -> list[int]:
    """How many approvers each quorum gets when distinct voters are placed as well as possible.

    Each voter counts once: a person in both @legal and @finance must not satisfy
    "one from each" alone, which is the point of asking two groups. Among the best
    placements (most seats filled) the first found is kept, so the card's "waiting
    on" text is stable. Sizes are tiny, so backtracking is fine.
    """
    need = [q.required for q in quorums]
    filled = [0] * len(quorums)
    best = list(filled)

    def place(index: int) -> None:
        nonlocal best
        total = sum(filled)
        if total > sum(best):
            best = list(filled)
        if total == sum(need) or total + len(voters) - index <= sum(best):
            return
        voter, groups = voters[index]
        for qi, quorum in enumerate(quorums):
            if filled[qi] < need[qi] and _matches(quorum, voter, groups):
                filled[qi] += 1
                place(index + 1)
                filled[qi] -= 1
        place(index + 1)

    place(0)
    return best


def _first_votes(approvals: Iterable[Vote]) -> list[tuple[str, Collection[str]]]:
    """One entry per person, as for N of M: a repeated vote is not a second approver."""
    first: dict[str, Collection[str]] = {}
    for vote in approvals:
        first.setdefault(vote.voter, vote.groups)
    return list(first.items())


def tally(level: ApprovalLevel, votes: Iterable[Vote]) -> Decision | None:
    """The level's outcome from its counted votes: any rejection decides at once."""
    cast = list(votes)
    if any(vote.decision is Decision.REJECTED for vote in cast):
        return Decision.REJECTED
    approvals = [vote for vote in cast if vote.decision is Decision.APPROVED]
    if level.quorum:
        filled = _fill(level.quorum, _first_votes(approvals))
        met = all(have >= q.required for have, q in zip(filled, level.quorum, strict=True))
        return Decision.APPROVED if met else None
    return Decision.APPROVED if len({v.voter for v in approvals}) >= level.required else None


def progress(level: ApprovalLevel, votes: Iterable[Vote]) -> Progress:
    """What the card shows: "1 of 2 approvals: @ana approved, waiting on 1 from @legal"."""
    approvals = [vote for vote in votes if vote.decision is Decision.APPROVED]
    approved_by = tuple(dict.fromkeys(vote.voter for vote in approvals))
    if not level.quorum:
        remaining = max(level.required - len(approved_by), 0)
        missing = (f"{remaining} more",) if remaining else ()
        return Progress(approved_by, level.required, missing)
    missing_parts = []
    filled = _fill(level.quorum, _first_votes(approvals))
    for have, quorum in zip(filled, level.quorum, strict=True):
        if have < quorum.required:
            who = quorum.label or quorum.group or ", ".join(quorum.users)
            missing_parts.append(f"{quorum.required - have} from {who}")
    total = sum(q.required for q in level.quorum)
    return Progress(approved_by, total, tuple(missing_parts))
