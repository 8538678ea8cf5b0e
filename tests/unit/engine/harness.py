"""Drive the pure machine in memory: apply each transition to a snapshot, as the store would."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from bot.definitions.models import FlowDef
from bot.engine.events import (
    CastVote,
    Event,
    StartRun,
    StepErrored,
    StepSucceeded,
    TimerDue,
    Transition,
)
from bot.engine.machine import decide
from bot.engine.move import Context, Definition, applied
from bot.engine.records import AuditEntry, Run, Snapshot
from bot.engine.states import Decision, RunState, StepState, TimerPurpose

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def definition(text: str | dict[str, Any]) -> Definition:
    data = yaml.safe_load(text) if isinstance(text, str) else text
    flow = FlowDef.model_validate(data)
    dumped = flow.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    digest = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()
    return Definition(flow=flow, data=dumped, hash=digest)


class World:
    """Several runs in memory, with the transactional semantics of the store."""

    def __init__(self, *flows: Definition, worker: str | None = "w1") -> None:
        self.flows = {d.flow.name: d for d in flows}
        self.snapshots: dict[str, Snapshot] = {}
        self.now = T0
        self.worker = worker
        self.log: list[tuple[str, Event, Transition]] = []

    def ctx(self) -> Context:
        return Context(now=self.now, worker=self.worker, definitions=self.flows.get)

    def start(self, flow: str, inputs: dict[str, Any] | None = None, *, by: str = "U0REQ") -> str:
        d = self.flows[flow]
        run_id = f"run{len(self.snapshots) + 1}"
        run = Run(
            id=run_id,
            flow=flow,
            definition=d.data,
            definition_hash=d.hash,
            state=RunState.RUNNING,
            inputs=inputs or {},
            started_by=by,
            created_at=self.now,
            updated_at=self.now,
        )
        self.snapshots[run_id] = Snapshot(run=run, steps={})
        self.apply(run_id, StartRun(actor=by))
        return run_id

    def apply(self, run_id: str, event: Event) -> Transition:
        before = self.snapshots[run_id]
        t = decide(before, event, self.ctx())
        self.log.append((run_id, event, t))
        if t.changed:
            self._write(before, t)
        for target, emitted in t.emits:
            self.apply(target, emitted)
        return t

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def run(self, run_id: str) -> Run:
        return self.snapshots[run_id].run

    def step(self, run_id: str, key: str) -> Any:
        return self.snapshots[run_id].steps[key]

    def _write(self, before: Snapshot, t: Transition) -> None:
        assert t.run.version == before.run.version + 1
        self.snapshots[before.run.id] = applied(before, t)
        for child in t.new_runs:
            self.snapshots[child.id] = Snapshot(run=child, steps={})

    def timers(self, run_id: str) -> list[Any]:
        return sorted(self.snapshots[run_id].timers, key=lambda t: t.due_at)

    # ------------------------------------------------------------ shortcuts for tests

    def fire(self, run_id: str, key: str, purpose: TimerPurpose) -> Transition:
        """Fire a timer as the store does: take (delete) its row, then apply ``TimerDue``."""
        snap = self.snapshots[run_id]
        left = tuple(t for t in snap.timers if (t.step_key, t.purpose) != (key, purpose))
        assert len(left) < len(snap.timers), f"no {purpose} timer for {key}"
        self.snapshots[run_id] = dataclasses.replace(snap, timers=left)
        return self.apply(run_id, TimerDue(key=key, purpose=purpose))

    def timer(self, run_id: str, key: str, purpose: TimerPurpose) -> Any:
        """The timer of ``key`` for ``purpose``, or None."""
        for t in self.snapshots[run_id].timers:
            if (t.step_key, t.purpose) == (key, purpose):
                return t
        return None

    def succeed(self, run_id: str, key: str, output: Any = None) -> Transition:
        """Report the current attempt of ``key`` as succeeded, by the worker holding it."""
        row = self.step(run_id, key)
        owner = row.lease_owner or self.worker or "w1"
        return self.apply(
            run_id, StepSucceeded(key=key, attempt=row.attempt, owner=owner, output=output)
        )

    def fail(
        self,
        run_id: str,
        key: str,
        message: str = "boom",
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> Transition:
        """Report the current attempt of ``key`` as failed, by the worker holding it."""
        row = self.step(run_id, key)
        owner = row.lease_owner or self.worker or "w1"
        return self.apply(
            run_id,
            StepErrored(
                key=key,
                attempt=row.attempt,
                owner=owner,
                message=message,
                retryable=retryable,
                retry_after=retry_after,
                status=status,
            ),
        )

    def vote(
        self,
        run_id: str,
        key: str,
        voter: str,
        decision: Decision = Decision.APPROVED,
        *,
        groups: frozenset[str] = frozenset(),
        reason: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Transition:
        return self.apply(
            run_id,
            CastVote(
                key=key,
                voter=voter,
                voter_groups=groups,
                decision=decision,
                reason=reason,
                fields=fields or {},
            ),
        )

    def audit(self, run_id: str) -> list[AuditEntry]:
        """Every audit entry written for the run, in order."""
        return [e for rid, _, t in self.log if rid == run_id and t.changed for e in t.audit]

    def states(self, run_id: str) -> dict[str, str]:
        """Step key -> state value, for compact assertions."""
        return {key: row.state.value for key, row in self.snapshots[run_id].steps.items()}


# ---------------------------------------------------------------- helpers for behaviour tests


def world(text: str, *others: str, worker: str | None = "w1") -> World:
    """A World holding the flow ``text`` (and ``others``, e.g. sub-flows)."""
    return World(definition(text), *(definition(o) for o in others), worker=worker)


def executed(t: Transition) -> list[tuple[str, int]]:
    """The (step key, attempt) pairs a transition asks this worker to perform."""
    return [(e.key, e.attempt) for e in t.executions]


def seconds_until(w: World, run: str, key: str, purpose: TimerPurpose) -> float:
    """How long until the timer of ``key`` for ``purpose`` is due (it must exist)."""
    timer = w.timer(run, key, purpose)
    assert timer is not None, f"no {purpose} timer on {key}"
    return float((timer.due_at - w.now).total_seconds())


def running(w: World, r: str) -> list[str]:
    """Keys of the run's steps that are RUNNING, sorted."""
    return sorted(k for k, s in w.snapshots[r].steps.items() if s.state is StepState.RUNNING)
