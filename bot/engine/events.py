"""What can happen to a run: the typed inputs of the machine, and its output.

An event is applied in one transaction under the run's row lock; the resulting
``Transition`` is written in that same transaction, and only then are its
``executions`` started and its ``outbox`` delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.engine.records import Approval, Attempt, AuditEntry, Run, StepRun, Timer, Vote
from bot.engine.states import Decision, RunState, TimerPurpose


@dataclass(frozen=True, kw_only=True)
class StartRun:
    """The run row was just inserted: start its first steps."""

    actor: str


@dataclass(frozen=True, kw_only=True)
class StepSucceeded:
    """An attempt finished well. Fenced by (attempt, owner): a stale worker's result is dropped."""

    key: str
    attempt: int
    owner: str
    output: Any
    status: int | None = None


@dataclass(frozen=True, kw_only=True)
class StepErrored:
    """An attempt failed; ``retryable`` and ``retry_after`` come from the executor."""

    key: str
    attempt: int
    owner: str
    message: str
    retryable: bool
    retry_after: float | None = None
    status: int | None = None
    excerpt: str | None = None


@dataclass(frozen=True, kw_only=True)
class LeaseExpired:
    """The worker running this attempt stopped renewing its lease (it crashed or hung)."""

    key: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class TimerDue:
    """A durable timer fired."""

    key: str
    purpose: TimerPurpose


@dataclass(frozen=True, kw_only=True)
class CastVote:
    """Somebody answered an approval. ``voter_groups`` is resolved before the transaction."""

    key: str
    voter: str
    voter_groups: frozenset[str]
    decision: Decision
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    via: str = ""


@dataclass(frozen=True, kw_only=True)
class Cancel:
    """Stop the run: abandon in-flight calls, undo finished steps, end ``cancelled``."""

    actor: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Retry:
    """Reopen a failed run from its failed step (or the one named)."""

    actor: str
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Skip:
    """Mark a failed (or retrying) step skipped and carry on after it."""

    actor: str
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChildFinished:
    """A sub-flow's run ended; its parent's ``flow`` step can finish."""

    key: str
    child_run_id: str
    succeeded: bool
    rejected: bool = False
    """The child ended because an approval was rejected: a decision, not a failure,
    so the parent treats it as it treats a rejection of its own approvals."""
    outputs: Any = None
    error: str | None = None


def child_finished(run: Run, key: str) -> ChildFinished:
    """What a finished sub-flow run tells the parent step ``key`` waiting for it.

    One builder for the machine (as the child ends) and the runner's recovery
    (which re-tells parents still waiting), so both report the same outcome.
    """
    succeeded = run.state is RunState.SUCCEEDED
    error = run.error or {}
    return ChildFinished(
        key=key,
        child_run_id=run.id,
        succeeded=succeeded,
        rejected=not succeeded and error.get("reason") == "rejected",
        outputs=run.outputs if succeeded else None,
        error=None if succeeded else error.get("message", run.state.value),
    )


Event = (
    StartRun
    | StepSucceeded
    | StepErrored
    | LeaseExpired
    | TimerDue
    | CastVote
    | Cancel
    | Retry
    | Skip
    | ChildFinished
)


@dataclass(frozen=True, kw_only=True)
class Execution:
    """An attempt to perform after commit: the step row already says RUNNING under our lease."""

    run_id: str
    key: str
    attempt: int


COLLAPSIBLE = frozenset({"run", "approval"})
"""Chat effect kinds that render the run as it is when sent: one pending stands for many."""


@dataclass(frozen=True, kw_only=True)
class ChatEffect:
    """A message to send or update, kept in the outbox until the chat confirms it.

    ``kind``: ``run`` (status message), ``approval`` (the card), ``alert``,
    ``reminder``. ``run`` and ``approval`` (``COLLAPSIBLE``) render the current
    state when sent, so several pending ones for the same target collapse into one.
    """

    kind: str
    run_id: str
    step_key: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Transition:
    """What one event does to one run: the rows to write and the effects to perform."""

    run: Run
    steps: tuple[StepRun, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    approvals: tuple[Approval, ...] = ()
    votes: tuple[Vote, ...] = ()
    timers_set: tuple[Timer, ...] = ()
    timers_cleared: tuple[tuple[str, TimerPurpose], ...] = ()
    audit: tuple[AuditEntry, ...] = ()
    chat: tuple[ChatEffect, ...] = ()
    executions: tuple[Execution, ...] = ()
    aborts: tuple[str, ...] = ()
    """Step keys whose in-flight attempts must stop (cancel, fail-fast siblings)."""
    new_runs: tuple[Run, ...] = ()
    emits: tuple[tuple[str, Event], ...] = ()
    """Events for other runs (a child started, a parent told), applied in the same transaction."""
    reply: str | None = None
    """What to tell the person who caused the event (a vote counted, or why not)."""
    changed: bool = True
    """False when the event was stale or refused and nothing is written."""
