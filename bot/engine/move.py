"""The working state of one transition while the machine decides it.

``Move`` starts from a snapshot, lets the planner and the event handlers change
rows, and ends as a frozen ``Transition``. Every state change goes through
``set_step`` / ``set_run``, which check the move against the tables in
``states.py``: an illegal move is a bug in the machine, raised at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from bot.definitions.models import FlowDef
from bot.definitions.templating import Scope
from bot.engine.audit import seal
from bot.engine.events import Cancel, ChatEffect, Event, Execution, Transition
from bot.engine.records import (
    Approval,
    Attempt,
    AuditEntry,
    Run,
    Snapshot,
    StepRun,
    Timer,
    Vote,
    evolve,
)
from bot.engine.states import RUN_MOVES, STEP_MOVES, StepState, TimerPurpose


class IllegalMove(AssertionError):
    """The machine tried a move the state tables forbid: a bug, never user error."""


@dataclass(frozen=True)
class Definition:
    """A flow definition as a run stores it: the parsed model and its snapshot."""

    flow: FlowDef
    data: dict[str, Any]
    hash: str


@dataclass(frozen=True, kw_only=True)
class Context:
    """What the machine may know besides the snapshot: time, who performs, other flows."""

    now: datetime
    worker: str | None
    """Who performs the executions this transition starts. None for a passive engine
    (a CLI command): attempts are left unclaimed for any worker to take."""
    lease: timedelta = timedelta(seconds=30)
    definitions: Callable[[str], Definition | None] = field(default=lambda _name: None)
    """Look up another flow by name, for sub-flow steps."""


_FINISH_SEQ = attrgetter("finish_seq")

_PARSED: dict[str, FlowDef] = {}
"""Definitions by hash, most recently used last."""

_PARSED_LIMIT = 256
_PARSED_LOCK = threading.Lock()
"""Transitions are decided on database threads as well as on the event loop."""


def flow_of(run: Run) -> FlowDef:
    """The run's own definition snapshot, parsed once per hash.

    Keyed by the hash alone (a run's hash is the hash of its data): every
    transition asks, and serialising the definition to make a key cost more
    than the rest of a small transition.
    """
    with _PARSED_LOCK:
        found = _PARSED.pop(run.definition_hash, None)
        if found is not None:
            _PARSED[run.definition_hash] = found
            return found
    flow = FlowDef.model_validate(run.definition)
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_LIMIT:
            del _PARSED[next(iter(_PARSED))]
        _PARSED[run.definition_hash] = flow
    return flow


class Move:
    """A transition being built."""

    def __init__(self, snapshot: Snapshot, event: Event, ctx: Context) -> None:
        self.before = snapshot
        self.event = event
        self.ctx = ctx
        self.now = ctx.now
        self.flow = flow_of(snapshot.run)
        self.run = snapshot.run
        self.steps: dict[str, StepRun] = dict(snapshot.steps)
        self.changed_steps: dict[str, StepRun] = {}
        self.approvals: dict[str, Approval] = dict(snapshot.approvals)
        self.changed_approvals: dict[str, Approval] = {}
        self.votes: list[Vote] = list(snapshot.votes)
        self.new_votes: list[Vote] = []
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.timers_set: dict[tuple[str, TimerPurpose], Timer] = {}
        self.timers_cleared: set[tuple[str, TimerPurpose]] = set()
        self.audit_entries: list[AuditEntry] = []
        self.chat: list[ChatEffect] = []
        self.executions: dict[str, Execution] = {}
        self.aborts: list[str] = []
        self.new_runs: list[Run] = []
        self.emits: list[tuple[str, Event]] = []
        self.reply: str | None = None
        self._finish_seq = max(map(_FINISH_SEQ, self.steps.values()), default=0)
        self._status_dirty = False
        # The run's chain head moves with each entry; ``build`` writes it to the run
        # once, instead of copying the run for every entry.
        self._audit_seq = snapshot.run.audit_seq
        self._audit_head = snapshot.run.audit_head

    # ------------------------------------------------------------ rows

    def set_run(self, **changes: Any) -> None:
        state = changes.get("state")
        if state is not None and state not in RUN_MOVES[self.run.state]:
            raise IllegalMove(f"run {self.run.state} -> {state}")
        self.run = evolve(self.run, **changes)
        self._status_dirty = True

    def set_step(self, row: StepRun) -> StepRun:
        return self._put(row, {})

    def update_step(self, key: str, **changes: Any) -> StepRun:
        return self._put(self.steps[key], changes)

    def _put(self, row: StepRun, changes: dict[str, Any]) -> StepRun:
        """Store ``row`` with ``changes``, stamping a finish: one copy of the row at most."""
        old = self.steps.get(row.key)
        old_state = None if old is None else old.state
        state = changes.get("state", row.state)
        if old_state != state:
            if state not in STEP_MOVES[old_state]:
                raise IllegalMove(f"step {row.key}: {old_state} -> {state}")
            if state.finished and state is not StepState.COMPENSATED:
                self._finish_seq += 1
                changes = {**changes, "finish_seq": self._finish_seq, "finished_at": self.now}
            self._status_dirty = True
        if changes:
            row = evolve(row, **changes)
        self.steps[row.key] = row
        self.changed_steps[row.key] = row
        return row

    def set_approval(self, approval: Approval) -> None:
        self.approvals[approval.step_key] = approval
        self.changed_approvals[approval.step_key] = approval

    def add_vote(self, vote: Vote) -> None:
        self.votes.append(vote)
        self.new_votes.append(vote)

    def record_attempt(self, attempt: Attempt) -> None:
        self.attempts[(attempt.step_key, attempt.number)] = attempt

    def finish_attempt(
        self, key: str, number: int, outcome: str, *, status: int | None = None, error: str = ""
    ) -> None:
        started = self.steps[key].started_at or self.now
        self.record_attempt(
            Attempt(
                run_id=self.run.id,
                step_key=key,
                number=number,
                started_at=started,
                finished_at=self.now,
                outcome=outcome,
                status=status,
                error=error or None,
            )
        )

    def set_timer(self, key: str, purpose: TimerPurpose, due_at: datetime) -> None:
        self.timers_cleared.discard((key, purpose))
        self.timers_set[(key, purpose)] = Timer(
            run_id=self.run.id, step_key=key, purpose=purpose, due_at=due_at
        )

    def clear_timer(self, key: str, purpose: TimerPurpose) -> None:
        self.timers_set.pop((key, purpose), None)
        if any(t.step_key == key and t.purpose is purpose for t in self.before.timers):
            self.timers_cleared.add((key, purpose))

    def clear_timers(self, key: str) -> None:
        for purpose in TimerPurpose:
            self.clear_timer(key, purpose)

    def execute(self, key: str) -> None:
        """Start the next attempt of a step on this worker, under a fresh lease."""
        row = self.steps[key]
        attempt = row.attempt + 1
        self.update_step(key, state=StepState.RUNNING, attempt=attempt, **self._lease(row))
        self.record_attempt(
            Attempt(run_id=self.run.id, step_key=key, number=attempt, started_at=self.now)
        )
        self._perform(key, attempt)

    def claim(self, key: str) -> None:
        """Lease the step's current attempt to this worker and have it performed."""
        row = self.update_step(key, **self._lease(self.steps[key]))
        self._perform(key, row.attempt)

    def _lease(self, row: StepRun) -> dict[str, Any]:
        """The fields that lease ``row``'s attempt to this worker.

        A passive engine leaves the lease unowned and already lapsed, so the next
        worker tick claims it without counting an abandoned attempt.
        """
        worker = self.ctx.worker
        return {
            "started_at": row.started_at or self.now,
            "lease_owner": worker,
            "lease_until": self.now + self.ctx.lease if worker else self.now,
        }

    def _perform(self, key: str, attempt: int) -> None:
        if self.ctx.worker is not None:
            self.executions[key] = Execution(run_id=self.run.id, key=key, attempt=attempt)

    def abort(self, key: str) -> None:
        """Stop a step wherever it is: in flight, backing off, or waiting.

        A sub-flow step waiting on a child run cancels that run too, whoever stops
        the step (a cancel, or a failing sibling in a parallel or a for_each): a
        child whose parent no longer waits for it must not go on acting.
        """
        row = self.steps[key]
        child = row.detail.get("child_run_id")
        if row.state is StepState.WAITING and isinstance(child, str):
            self.emits.append(
                (child, Cancel(actor=f"run:{self.run.id}", reason=f"step {key} was stopped"))
            )
        if row.state is StepState.RUNNING:
            self.finish_attempt(key, row.attempt, "abandoned", error="cancelled")
            if key in self.executions:
                del self.executions[key]
            else:
                self.aborts.append(key)
        self.clear_timers(key)
        self.set_step(evolve(row, state=StepState.CANCELLED, lease_owner=None, lease_until=None))
        approval = self.approvals.get(key)
        if approval is not None and approval.state == "pending":
            self.set_approval(
                evolve(approval, state="cancelled", how="cancelled", decided_at=self.now)
            )
            self.effect("approval", key)

    # ------------------------------------------------------------ outputs

    def audit(self, actor: str, action: str, **detail: Any) -> None:
        self._audit_seq += 1
        entry = seal(
            run_id=self.run.id,
            seq=self._audit_seq,
            prev_hash=self._audit_head,
            at=self.now,
            actor=actor,
            action=action,
            detail=detail,
        )
        self.audit_entries.append(entry)
        self._audit_head = entry.hash

    def effect(self, kind: str, step_key: str = "", **payload: Any) -> None:
        self.chat.append(
            ChatEffect(kind=kind, run_id=self.run.id, step_key=step_key, payload=payload)
        )

    def scope(self, extra: Mapping[str, Any] | None = None) -> Scope:
        """The template scope as the machine sees it: secrets are never rendered here."""
        masked = {name: "***" for name in self.flow.secrets}
        return scope_of(self.run, self.steps.values(), secrets=masked, extra=extra)

    def build(self) -> Transition:
        if self._status_dirty:
            self.effect("run")
        run = evolve(
            self.run,
            version=self.run.version + 1,
            updated_at=self.now,
            audit_seq=self._audit_seq,
            audit_head=self._audit_head,
        )
        return Transition(
            run=run,
            steps=tuple(self.changed_steps.values()),
            attempts=tuple(self.attempts.values()),
            approvals=tuple(self.changed_approvals.values()),
            votes=tuple(self.new_votes),
            timers_set=tuple(self.timers_set.values()),
            timers_cleared=tuple(sorted(self.timers_cleared)),
            audit=tuple(self.audit_entries),
            chat=tuple(self.chat),
            executions=tuple(self.executions.values()),
            aborts=tuple(self.aborts),
            new_runs=tuple(self.new_runs),
            emits=tuple(self.emits),
            reply=self.reply,
        )


_STATE_TEXT = {state: state.value for state in StepState}
"""A state as the plain text templates see; ``.value`` on an enum costs a descriptor call."""


def scope_of(
    run: Run,
    steps: Iterable[StepRun],
    *,
    secrets: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
) -> Scope:
    """The template scope of a run: its inputs, its whole steps' outputs, and ``secrets``.

    The machine passes masked secrets (what it renders may be shown to people);
    the runner passes the real values for the request an executor sends.
    """
    return Scope(
        inputs=run.inputs,
        steps={
            row.step_id: {"output": row.output, "state": _STATE_TEXT[row.state]}
            for row in steps
            if row.key == row.step_id
        },
        run=run_info(run),
        secrets=secrets,
        extra=extra or {},
    )


def run_info(run: Run) -> dict[str, Any]:
    """``run`` in the template scope."""
    return {
        "id": run.id,
        "flow": run.flow,
        "started_by": run.started_by,
        "started_at": run.created_at.isoformat(),
        "source": run.source,
    }


def applied(before: Snapshot, transition: Transition) -> Snapshot:
    """The snapshot after a transition, as the store will hold it once written."""
    if not transition.changed:
        return before
    steps = dict(before.steps)
    steps.update({row.key: row for row in transition.steps})
    approvals = dict(before.approvals)
    approvals.update({a.step_key: a for a in transition.approvals})
    replaced = set(transition.timers_cleared) | {
        (t.step_key, t.purpose) for t in transition.timers_set
    }
    timers = [t for t in before.timers if (t.step_key, t.purpose) not in replaced]
    timers.extend(transition.timers_set)
    return Snapshot(
        run=transition.run,
        steps=steps,
        approvals=approvals,
        votes=before.votes + transition.votes,
        timers=tuple(timers),
    )
