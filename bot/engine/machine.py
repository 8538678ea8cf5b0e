"""``decide(snapshot, event, ctx) -> Transition``: the whole engine logic, with no I/O.

The runner loads a snapshot under the run's lock, calls ``decide``, writes the
transition in the same transaction, and only then performs its effects. Being
pure, every rule here is tested in microseconds, and hypothesis drives random
event sequences through it.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from bot.definitions.models import ApprovalStep, RetryingStep
from bot.engine import approvals as policy
from bot.engine.events import (
    Cancel,
    CastVote,
    ChildFinished,
    Event,
    LeaseExpired,
    Retry,
    Skip,
    StartRun,
    StepErrored,
    StepSucceeded,
    TimerDue,
    Transition,
)
from bot.engine.move import Context, Move
from bot.engine.plan import advance, arm_approval_timers, item_key, tell_parent, undo_plan
from bot.engine.records import Snapshot, StepRun, Vote, evolve
from bot.engine.states import Decision, RunState, StepState, TimerPurpose


def decide(snapshot: Snapshot, event: Event, ctx: Context) -> Transition:
    """The transition ``event`` causes on the run in ``snapshot`` at ``ctx.now``."""
    move = Move(snapshot, event, ctx)
    handled = _HANDLERS[type(event)](move, event)  # type: ignore[operator]
    if not handled:
        return Transition(run=snapshot.run, reply=move.reply, changed=False)
    return move.build()


def _unchanged(move: Move, reply: str) -> bool:
    move.reply = reply
    return False


def _start(move: Move, event: StartRun) -> bool:
    if move.steps or move.run.audit_seq:
        return _unchanged(move, "the run has already started")
    move.audit(event.actor, "run.started", flow=move.run.flow, inputs=sorted(move.run.inputs))
    advance(move)
    return True


def _current(move: Move, key: str, attempt: int, owner: str) -> StepRun | None:
    """The step row if this result is still wanted: fencing against stale workers."""
    row = move.steps.get(key)
    if row is None or row.state is not StepState.RUNNING:
        return None
    if row.attempt != attempt or row.lease_owner != owner:
        return None
    return row


def _succeeded(move: Move, event: StepSucceeded) -> bool:
    row = _current(move, event.key, event.attempt, event.owner)
    if row is None:
        return _unchanged(move, "stale result dropped: the step moved on")
    move.finish_attempt(event.key, event.attempt, "succeeded", status=event.status)
    move.update_step(
        row.key,
        state=StepState.SUCCEEDED,
        output=event.output,
        error=None,
        lease_owner=None,
        lease_until=None,
    )
    move.audit(move.ctx.worker or "engine", "step.succeeded", step=event.key, attempt=event.attempt)
    advance(move)
    return True


def _jitter(run_id: str, key: str, attempt: int) -> float:
    """A deterministic draw in [0, 1): replaying a decision gives the same delay."""
    digest = hashlib.sha256(f"{run_id}/{key}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _errored(move: Move, event: StepErrored) -> bool:
    row = _current(move, event.key, event.attempt, event.owner)
    if row is None:
        return _unchanged(move, "stale result dropped: the step moved on")
    step = move.flow.step(row.step_id)
    retry = (step.retry if isinstance(step, RetryingStep) else None) or move.flow.defaults.retry
    failures = row.failures + 1
    move.finish_attempt(
        event.key, event.attempt, "failed", status=event.status, error=event.message
    )
    error = {
        "message": event.message,
        "status": event.status,
        "excerpt": event.excerpt,
        "retryable": event.retryable,
        "attempts": row.attempt,
    }
    released = evolve(
        row,
        lease_owner=None,
        lease_until=None,
        failures=failures,
        error=error,
        detail=_without_streak(row.detail),
    )
    if event.retryable and failures < retry.attempts:
        delay = retry.delay(failures, _jitter(move.run.id, row.key, row.attempt)).total_seconds()
        if event.retry_after is not None:
            delay = max(event.retry_after, 0.0)
        due = move.now + timedelta(seconds=delay)
        move.set_step(evolve(released, state=StepState.RETRYING))
        move.set_timer(row.key, TimerPurpose.RETRY, due)
        move.audit(
            move.ctx.worker or "engine",
            "step.retrying",
            step=row.key,
            attempt=row.attempt,
            error=event.message,
            at=due.isoformat(),
        )
    else:
        move.set_step(evolve(released, state=StepState.FAILED))
        move.audit(move.ctx.worker or "engine", "step.failed", step=row.key, error=event.message)
    advance(move)
    return True


ABANDON_LIMIT = 3
"""Attempts in a row a step may lose to a stopped worker before it fails for good.

A lost attempt is not the step's fault most of the time (a deploy, a crash
elsewhere), so it does not use up the retry policy. But a step that kills its
worker every time (out of memory on a huge response) would otherwise loop for
ever, so after this many in a row it fails and failure handling takes over.
Fixed rather than taken from ``retry.attempts``: a step with ``attempts: 1``
must still survive an ordinary restart.
"""


def _without_streak(detail: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in detail.items() if name != "abandoned"}


def _lease_expired(move: Move, event: LeaseExpired) -> bool:
    row = move.steps.get(event.key)
    if row is None or row.state is not StepState.RUNNING or row.attempt != event.attempt:
        return _unchanged(move, "the step is no longer in flight")
    if row.lease_owner is None:
        if move.ctx.worker is None:
            return _unchanged(move, "a passive engine does not claim work")
        move.claim(row.key)
        move.audit(move.ctx.worker or "engine", "step.claimed", step=row.key, attempt=row.attempt)
        return True
    if row.lease_until is not None and row.lease_until > move.now:
        return _unchanged(move, "the lease is still held")
    move.finish_attempt(row.key, row.attempt, "abandoned", error="worker stopped")
    # ``detail["abandoned"]`` counts lost attempts since the last one that reported
    # back; ``failures`` (the retry policy's budget) is left alone.
    abandoned = int(row.detail.get("abandoned", 0)) + 1
    detail = {**row.detail, "abandoned": abandoned}
    if abandoned >= ABANDON_LIMIT:
        message = (
            f"the worker stopped {abandoned} times while running this step; "
            "it was not retried again"
        )
        error = {"message": message, "retryable": False, "attempts": row.attempt}
        move.set_step(
            evolve(
                row,
                state=StepState.FAILED,
                detail=detail,
                error=error,
                lease_owner=None,
                lease_until=None,
            )
        )
        move.audit(move.ctx.worker or "engine", "step.failed", step=row.key, error=message)
    else:
        move.set_step(evolve(row, state=StepState.RETRYING, detail=detail))
        move.execute(row.key)
        move.audit(
            move.ctx.worker or "engine", "step.resumed", step=row.key, attempt=row.attempt + 1
        )
    advance(move)
    return True


def _timer(move: Move, event: TimerDue) -> bool:
    row = move.steps.get(event.key)
    if row is None or not move.run.state.active:
        return _unchanged(move, "the timer's step is gone")
    purpose = event.purpose
    if purpose is TimerPurpose.RETRY and row.state is StepState.RETRYING:
        move.execute(row.key)
        move.audit("timer", "step.started", step=row.key, attempt=row.attempt + 1)
    elif purpose is TimerPurpose.WAIT and row.state is StepState.WAITING:
        move.set_step(evolve(row, state=StepState.SUCCEEDED, output={}))
        move.audit("timer", "step.succeeded", step=row.key)
    elif purpose is TimerPurpose.APPROVAL_TIMEOUT and row.state is StepState.WAITING:
        _approval_timeout(move, row)
    elif purpose is TimerPurpose.REMINDER and row.state is StepState.WAITING:
        _remind(move, row)
    else:
        return _unchanged(move, "the timer no longer applies")
    advance(move)
    return True


def _approval_step(move: Move, row: StepRun) -> ApprovalStep:
    step = move.flow.step(row.step_id)
    assert isinstance(step, ApprovalStep)
    return step


def _approval_timeout(move: Move, row: StepRun) -> None:
    step = _approval_step(move, row)
    approval = move.approvals[row.key]
    levels = step.levels()
    level = levels[approval.level]
    move.clear_timer(row.key, TimerPurpose.REMINDER)
    if level.on_timeout == "escalate" and approval.level + 1 < len(levels):
        nxt = levels[approval.level + 1]
        deadline = move.now + nxt.timeout if nxt.timeout else None
        move.set_approval(evolve(approval, level=approval.level + 1, deadline=deadline))
        arm_approval_timers(move, row.key, nxt.remind_every, deadline)
        move.effect("approval", row.key, escalated=True)
        move.audit("timer", "approval.escalated", step=row.key, level=approval.level + 1)
        return
    decision = Decision.APPROVED if level.on_timeout == "approve" else Decision.REJECTED
    _decide(move, row, decision, voters=(), reason="no decision before the timeout", how="timeout")


def _remind(move: Move, row: StepRun) -> None:
    step = _approval_step(move, row)
    approval = move.approvals[row.key]
    level = step.levels()[approval.level]
    move.effect("reminder", row.key)
    move.audit("timer", "approval.reminded", step=row.key)
    if level.remind_every:
        nxt = move.now + level.remind_every
        if approval.deadline is None or nxt < approval.deadline:
            move.set_timer(row.key, TimerPurpose.REMINDER, nxt)


def _decide(
    move: Move,
    row: StepRun,
    decision: Decision,
    *,
    voters: tuple[str, ...],
    reason: str | None,
    how: str,
) -> None:
    approval = move.approvals[row.key]
    move.set_approval(
        evolve(
            approval,
            state=decision.value,
            decided_at=move.now,
            decided_by=voters,
            reason=reason,
            how=how,
        )
    )
    move.clear_timer(row.key, TimerPurpose.APPROVAL_TIMEOUT)
    move.clear_timer(row.key, TimerPurpose.REMINDER)
    step = _approval_step(move, row)
    fields: dict[str, object] = {}
    for vote in policy.current(approval, move.votes):
        if vote.decision is Decision.APPROVED:
            fields.update(policy.coerce_fields(step, vote.fields))
    output = {
        "decision": decision.value,
        "decided_by": list(voters),
        "reason": reason,
        "fields": fields,
        "how": how,
    }
    if decision is Decision.APPROVED:
        move.set_step(evolve(row, state=StepState.SUCCEEDED, output=output))
    else:
        message = f"rejected by {', '.join(voters)}" if voters else "rejected: timed out"
        if reason:
            message += f": {reason}"
        move.set_step(
            evolve(row, state=StepState.REJECTED, output=output, error={"message": message})
        )
    move.effect("approval", row.key)
    move.audit(", ".join(voters) or "timer", f"approval.{decision.value}", step=row.key, how=how)


def _vote(move: Move, event: CastVote) -> bool:
    row = move.steps.get(event.key)
    approval = move.approvals.get(event.key)
    if row is None or approval is None:
        return _unchanged(move, "this step is not waiting for an approval")
    if approval.state != "pending":
        who = ", ".join(approval.decided_by) or approval.how or "the system"
        return _unchanged(move, f"this approval was already {approval.state} ({who})")
    if not move.run.state.active:
        return _unchanged(move, f"the run is {move.run.state.value}")
    step = _approval_step(move, row)
    level = step.levels()[approval.level]
    here = policy.counted(approval, move.votes)
    elsewhere = {
        other: {
            v.voter
            for v in policy.current(move.approvals[other], move.votes)
            if v.decision is Decision.APPROVED
        }
        for other in step.exclude_approvers_of
        if other in move.approvals
    }
    why = policy.refusal(
        step=step,
        level=level,
        voter=event.voter,
        groups=event.voter_groups,
        decision=event.decision,
        reason=event.reason,
        fields=event.fields,
        requester=move.run.started_by,
        votes_here=here,
        approvers_elsewhere=elsewhere,
    )
    if why is not None:
        return _unchanged(move, why)
    vote = Vote(
        run_id=move.run.id,
        step_key=row.key,
        voter=event.voter,
        decision=event.decision,
        level=approval.level,
        at=max(move.now, approval.requested_at),
        round=approval.round,
        reason=event.reason,
        fields=dict(event.fields),
        via=event.via,
        groups=tuple(sorted(set(event.voter_groups) & policy.relevant_groups(level))),
    )
    move.add_vote(vote)
    move.audit(event.voter, f"vote.{event.decision.value}", step=row.key, via=event.via)
    outcome = policy.tally(level, [*here, vote])
    if outcome is None:
        move.effect("approval", row.key)
        move.reply = "your approval is counted; more approvals are needed"
    else:
        voters = tuple(
            dict.fromkeys(
                v.voter
                for v in [*here, vote]
                if v.decision is outcome or outcome is Decision.REJECTED
            )
        )
        if outcome is Decision.REJECTED:
            voters = (event.voter,)
        _decide(move, row, outcome, voters=voters, reason=event.reason, how="votes")
        move.reply = (
            f"{outcome.value}: the run goes on" if outcome is Decision.APPROVED else "rejected"
        )
    advance(move)
    return True


def _cancel(move: Move, event: Cancel) -> bool:
    state = move.run.state
    if state in (RunState.SUCCEEDED, RunState.CANCELLED):
        return _unchanged(move, f"the run already ended {state.value}")
    if state is RunState.FAILED:
        move.audit(event.actor, "run.cancel", reason=event.reason)
        move.set_run(state=RunState.CANCELLED)
        move.reply = "the failed run is closed"
        return True
    stopped = [key for key, row in move.steps.items() if row.state.active]
    failure = dict(move.run.error or {}) if state is RunState.COMPENSATING else {}
    undoing = failure.get("reason") in ("failed", "rejected")
    seen = {"stopped": stopped, "failure": failure.get("message")} if undoing else {}
    move.audit(event.actor, "run.cancel", reason=event.reason, **seen)
    for key in stopped:
        move.abort(key)
    cancel = {"by": event.actor, "message": event.reason or "cancelled"}
    if state is RunState.COMPENSATING:
        # Cancelled while undoing a failure: the failure stays the run's error, so
        # ``relay show`` and a parent run still say why it failed. The undo steps
        # are stopped too, so the run ends here and nothing later would tell a
        # parent run: tell it now.
        error = {**failure, "cancelled": cancel} if undoing else {"reason": "cancelled", **cancel}
        move.set_run(state=RunState.CANCELLED, finished_at=move.now, error=error)
        tell_parent(move)
    else:
        error = {"reason": "cancelled", **cancel}
        move.set_run(state=RunState.COMPENSATING, error=error, undo_plan=undo_plan(move))
    move.reply = "the run is cancelled"
    advance(move)
    return True


def _reopen(move: Move, actor: str, keep: str | None) -> None:
    """Put a failed run back to work: everything failed, undone or cleaned up starts again."""
    undo_ids = {u.id for sid in move.run.undo_plan for u in move.flow.step(sid).compensate}
    cleanup = undo_ids | {s.id for s in move.flow.on_failure}
    for key, row in list(move.steps.items()):
        if key == keep:
            continue
        base = row.step_id
        if base in cleanup or row.state in (
            StepState.FAILED,
            StepState.CANCELLED,
            StepState.COMPENSATED,
        ):
            move.set_step(
                evolve(row, state=StepState.PENDING, error=None, failures=0, lease_owner=None)
            )
    move.set_run(state=RunState.RUNNING, error=None, undo_plan=(), finished_at=None)


def _failed_key(move: Move, wanted: str | None) -> str | None:
    if wanted is not None:
        return wanted if wanted in move.steps else None
    key = (move.run.error or {}).get("step")
    return key if isinstance(key, str) and key in move.steps else None


_ASK_THE_PARENT = (
    "this run is a sub-flow of run {parent}, which has already been told it failed: "
    "retry or skip in run {parent}, which starts a new sub-flow run"
)
"""A finished child run is never reopened: its parent would not be waiting for it."""


_NO_STEP_FAILED = (
    "the run failed rendering its `outputs`, not in a step, so there is no step "
    "to retry: fix the flow and start a new run"
)
"""A failed ``outputs`` template is part of the run's frozen definition: retrying cannot fix it."""


def _retry(move: Move, event: Retry) -> bool:
    if move.run.state is not RunState.FAILED:
        return _unchanged(move, f"only a failed run can be retried; this one is {move.run.state}")
    if (move.run.error or {}).get("reason") == "rejected":
        return _unchanged(move, "a rejection is a decision, not a failure: start a new run")
    if move.run.parent_run_id is not None:
        return _unchanged(move, _ASK_THE_PARENT.format(parent=move.run.parent_run_id))
    if event.key is None and (move.run.error or {}).get("step") == "":
        return _unchanged(move, _NO_STEP_FAILED)
    key = _failed_key(move, event.key)
    if key is None or not move.steps[key].state.failed:
        return _unchanged(move, f"step {event.key or '?'} has not failed")
    move.audit(event.actor, "run.retry", step=key)
    _reopen(move, event.actor, None)
    move.reply = f"retrying from {key}"
    advance(move)
    return True


def _skip(move: Move, event: Skip) -> bool:
    state = move.run.state
    key = _failed_key(move, event.key)
    if key is None:
        return _unchanged(move, "name the step to skip")
    row = move.steps[key]
    if state is RunState.FAILED and row.state is StepState.FAILED:
        if (move.run.error or {}).get("reason") == "rejected":
            return _unchanged(move, "a rejected approval cannot be skipped: start a new run")
        if move.run.parent_run_id is not None:
            return _unchanged(move, _ASK_THE_PARENT.format(parent=move.run.parent_run_id))
        move.audit(event.actor, "step.skip", step=key)
        _reopen(move, event.actor, key)
        move.set_step(evolve(row, state=StepState.SKIPPED, detail={"by": event.actor}))
    elif state.active and row.state is StepState.RETRYING:
        move.audit(event.actor, "step.skip", step=key)
        move.clear_timers(key)
        move.set_step(evolve(row, state=StepState.SKIPPED, detail={"by": event.actor}))
    else:
        return _unchanged(move, f"step {key} is {row.state}: only a failed step can be skipped")
    move.reply = f"skipped {key}"
    advance(move)
    return True


def _child_finished(move: Move, event: ChildFinished) -> bool:
    row = move.steps.get(event.key)
    if (
        row is None
        or row.state is not StepState.WAITING
        or row.detail.get("child_run_id") != event.child_run_id
    ):
        return _unchanged(move, "the parent step is no longer waiting for this run")
    if event.succeeded:
        move.set_step(evolve(row, state=StepState.SUCCEEDED, output=event.outputs))
        move.audit(f"run:{event.child_run_id}", "step.succeeded", step=row.key)
    elif event.rejected:
        # As if the approval were the parent's own: the step is rejected and the
        # run ends as a rejection (no alert, no retry), not as a failure.
        message = f"sub-flow run {event.child_run_id} was rejected: {event.error}"
        error = {"message": message, "reason": "rejected"}
        move.set_step(evolve(row, state=StepState.REJECTED, error=error))
        move.audit(f"run:{event.child_run_id}", "step.rejected", step=row.key, error=message)
    else:
        message = f"sub-flow run {event.child_run_id} failed: {event.error}"
        move.set_step(evolve(row, state=StepState.FAILED, error={"message": message}))
        move.audit(f"run:{event.child_run_id}", "step.failed", step=row.key, error=message)
    advance(move)
    return True


_HANDLERS = {
    StartRun: _start,
    StepSucceeded: _succeeded,
    StepErrored: _errored,
    LeaseExpired: _lease_expired,
    TimerDue: _timer,
    CastVote: _vote,
    Cancel: _cancel,
    Retry: _retry,
    Skip: _skip,
    ChildFinished: _child_finished,
}

__all__ = ["Context", "decide", "item_key"]
