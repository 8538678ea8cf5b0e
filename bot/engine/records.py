"""Frozen value objects for what the database holds, mapped from rows at the store boundary.

The machine reads a ``Snapshot`` and returns new records; it never sees a row,
a session or a connection. ``evolve`` is how a record changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from bot.engine.states import Decision, RunState, StepState, TimerPurpose


@dataclass(frozen=True, kw_only=True)
class Run:
    """One execution of a flow, with the definition it was started with."""

    id: str
    flow: str
    definition: dict[str, Any]
    """The flow file as it was at start (pydantic dump): editing the file never
    changes a run in progress."""
    definition_hash: str
    state: RunState
    inputs: dict[str, Any]
    started_by: str
    source: dict[str, Any] = field(default_factory=dict)
    """Where the run was started from, opaque to the engine (e.g. a Slack channel)."""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    parent_run_id: str | None = None
    parent_step_key: str | None = None
    undo_plan: tuple[str, ...] = ()
    """Ids of the steps whose ``compensate`` steps run, in order, once a run fails."""
    version: int = 0
    audit_seq: int = 0
    audit_head: str = ""
    chat: dict[str, Any] = field(default_factory=dict)
    """References the chat adapter keeps (e.g. the status message), opaque here."""


@dataclass(frozen=True, kw_only=True)
class StepRun:
    """One step of a run, or one item of a ``for_each`` (key ``id[3]``)."""

    run_id: str
    key: str
    step_id: str
    kind: str
    state: StepState
    attempt: int = 0
    """Attempts started, including ones abandoned by a crash."""
    failures: int = 0
    """Attempts that failed; the retry policy counts these."""
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    finish_seq: int = 0
    """Order in which steps finished, for undoing them in reverse."""
    lease_owner: str | None = None
    lease_until: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    """Kind-specific state: a for_each's items, a sub-run's id, a skip's reason, and
    ``abandoned``, the attempts lost in a row to a stopped worker (``ABANDON_LIMIT``)."""


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One try of a step: kept for ``relay show`` and the thread of the status message."""

    run_id: str
    step_key: str
    number: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    """``succeeded``, ``failed`` or ``abandoned`` (the worker died or lost its lease)."""
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Approval:
    """The decision an approval step waits for."""

    run_id: str
    step_key: str
    level: int = 0
    """Index in the escalation chain."""
    state: str = "pending"
    """``pending``, ``approved`` or ``rejected``."""
    round: int = 0
    """How many times the step asked before this request (an operator's retry asks again)."""
    requested_at: datetime
    deadline: datetime | None = None
    decided_at: datetime | None = None
    decided_by: tuple[str, ...] = ()
    reason: str | None = None
    how: str | None = None
    """How it was decided: ``votes``, ``timeout``, ``cancelled``."""


@dataclass(frozen=True, kw_only=True)
class Vote:
    """One person's answer to an approval."""

    run_id: str
    step_key: str
    voter: str
    decision: Decision
    level: int
    at: datetime
    round: int = 0
    """The request answered (``Approval.round``): a voter may answer each request once,
    and the answers to earlier requests stay on record."""
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    via: str = ""
    groups: tuple[str, ...] = ()
    """The voter's user groups that matter to this approval, as they were when voting:
    a quorum is tallied from these, so a later change of membership cannot flip it."""


@dataclass(frozen=True, kw_only=True)
class Timer:
    """A durable wake-up. Firing deletes the row, so a timer fires once."""

    run_id: str
    step_key: str
    purpose: TimerPurpose
    due_at: datetime


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """One line of a run's tamper-evident history."""

    run_id: str
    seq: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything the machine needs to decide the next move of one run."""

    run: Run
    steps: dict[str, StepRun]
    approvals: dict[str, Approval] = field(default_factory=dict)
    votes: tuple[Vote, ...] = ()
    timers: tuple[Timer, ...] = ()

    def votes_for(self, step_key: str) -> list[Vote]:
        return [vote for vote in self.votes if vote.step_key == step_key]


R = TypeVar("R", Run, StepRun, Attempt, Approval, Vote, Timer, AuditEntry, Snapshot)

_FIELDS = {
    kind: frozenset(f.name for f in fields(kind))
    for kind in (Run, StepRun, Attempt, Approval, Vote, Timer, AuditEntry, Snapshot)
}


def evolve(record: R, **changes: Any) -> R:
    """``record`` with ``changes``, as ``dataclasses.replace`` makes it, only quicker.

    ``replace`` reads every field back through ``getattr`` and runs ``__init__``,
    which sets each field of a frozen class through ``object.__setattr__``; a
    chain step's decision copies three records, and this took a tenth off it.
    These records have no ``__post_init__`` and no init-only fields, so a copy
    of the instance's dict is the same record.
    """
    unknown = changes.keys() - _FIELDS[type(record)]
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field {', '.join(sorted(unknown))}")
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__, **changes)
    return copy
