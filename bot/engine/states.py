"""Run and step states, and which moves between them are legal.

The tables below are data, not scattered ``if``s: the machine asserts every move
it makes against them, and the property tests check that no sequence of events
can leave a run outside them.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Where a run stands."""

    RUNNING = "running"
    """Something can move without a person: a step is executing or due."""
    WAITING = "waiting"
    """Only a person or the clock can move it: approvals, waits, retry back-off."""
    COMPENSATING = "compensating"
    """A step failed for good; undo steps and ``on_failure`` steps are running."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Ended by a failure or a rejection. Operators may retry or skip to reopen it."""
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED_RUN

    @property
    def active(self) -> bool:
        return not self.finished


_FINISHED_RUN = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})

RUN_MOVES: dict[RunState, frozenset[RunState]] = {
    RunState.RUNNING: frozenset(
        {
            RunState.RUNNING,
            RunState.WAITING,
            RunState.COMPENSATING,
            RunState.SUCCEEDED,
            RunState.FAILED,
            RunState.CANCELLED,
        }
    ),
    RunState.WAITING: frozenset(
        {
            RunState.RUNNING,
            RunState.WAITING,
            RunState.COMPENSATING,
            RunState.SUCCEEDED,
            RunState.FAILED,
            RunState.CANCELLED,
        }
    ),
    RunState.COMPENSATING: frozenset({RunState.COMPENSATING, RunState.FAILED, RunState.CANCELLED}),
    RunState.SUCCEEDED: frozenset({RunState.SUCCEEDED}),
    RunState.FAILED: frozenset({RunState.FAILED, RunState.RUNNING, RunState.CANCELLED}),
    RunState.CANCELLED: frozenset({RunState.CANCELLED}),
}
"""Allowed run moves. FAILED → RUNNING is an operator's retry or skip; FAILED →
CANCELLED closes a failed run without reopening it."""


class StepState(StrEnum):
    """Where one step (or one item of a ``for_each``) stands."""

    PENDING = "pending"
    """Reset by an operator's retry: will start again, keeping its attempt count."""
    RUNNING = "running"
    """An attempt is in flight on a worker that holds the lease."""
    RETRYING = "retrying"
    """The last attempt failed; a timer starts the next one."""
    WAITING = "waiting"
    """Waiting on people (approval), the clock (wait), a child run, or nested steps."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    COMPENSATED = "compensated"
    """Succeeded, then undone by its ``compensate`` steps."""

    @property
    def finished(self) -> bool:
        return self in _FINISHED_STEP

    @property
    def active(self) -> bool:
        return self in _ACTIVE_STEP

    @property
    def failed(self) -> bool:
        return self in (StepState.FAILED, StepState.REJECTED)


_FINISHED_STEP = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.REJECTED,
        StepState.SKIPPED,
        StepState.CANCELLED,
        StepState.COMPENSATED,
    }
)
_ACTIVE_STEP = frozenset({StepState.RUNNING, StepState.RETRYING, StepState.WAITING})

STEP_MOVES: dict[StepState | None, frozenset[StepState]] = {
    None: frozenset(
        {
            StepState.PENDING,
            StepState.RUNNING,
            StepState.WAITING,
            StepState.SKIPPED,
            StepState.FAILED,
        }
    ),
    StepState.PENDING: frozenset(
        {StepState.RUNNING, StepState.WAITING, StepState.SKIPPED, StepState.FAILED}
    ),
    StepState.RUNNING: frozenset(
        {
            StepState.RUNNING,
            StepState.RETRYING,
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.CANCELLED,
        }
    ),
    StepState.RETRYING: frozenset(
        {StepState.RUNNING, StepState.SKIPPED, StepState.CANCELLED, StepState.FAILED}
    ),
    StepState.WAITING: frozenset(
        {
            StepState.WAITING,
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.REJECTED,
            StepState.CANCELLED,
        }
    ),
    StepState.SUCCEEDED: frozenset({StepState.COMPENSATED, StepState.PENDING}),
    StepState.FAILED: frozenset({StepState.PENDING, StepState.SKIPPED}),
    StepState.REJECTED: frozenset({StepState.PENDING}),
    StepState.SKIPPED: frozenset({StepState.PENDING}),
    StepState.CANCELLED: frozenset({StepState.PENDING}),
    StepState.COMPENSATED: frozenset({StepState.PENDING}),
}
"""Allowed step moves; ``None`` is a step that has no row yet.

REJECTED → PENDING is an operator's retry re-asking an approval among the undo or
``on_failure`` steps; a run that ended by a rejection is never retried, so a
rejection on the main path is final."""


class Decision(StrEnum):
    """A vote or an approval's outcome."""

    APPROVED = "approved"
    REJECTED = "rejected"


class TimerPurpose(StrEnum):
    """Why a timer row exists; the machine reacts to each differently."""

    RETRY = "retry"
    WAIT = "wait"
    APPROVAL_TIMEOUT = "approval_timeout"
    REMINDER = "reminder"
