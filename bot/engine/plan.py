"""Given where a run's steps stand, start what can start and finish what is done.

The planner walks the definition tree on every transition instead of keeping a
cursor: the rows are the only truth, so a run reloaded after a crash plans
exactly as it would have before. Steps of a sequence run in order; a
``parallel`` step runs its branches' sequences side by side; a ``for_each``
step fans out items under its concurrency limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from operator import attrgetter
from typing import Any

from bot.definitions.models import (
    ApprovalStep,
    HttpStep,
    NotifyStep,
    ParallelStep,
    Step,
    SubFlowStep,
    WaitStep,
)
from bot.definitions.templating import evaluate, render, render_data, render_value
from bot.engine.move import Move
from bot.engine.records import Approval, Run, StepRun, evolve
from bot.engine.states import RunState, StepState, TimerPurpose
from bot.errors import TemplateError

MAX_ITEMS = 1000

_STATE = attrgetter("state")

_DONE = frozenset({StepState.SUCCEEDED, StepState.SKIPPED, StepState.COMPENSATED})


class Status(Enum):
    """How a step or a sequence stands after planning."""

    DONE = "done"
    BLOCKED = "blocked"
    FAILED = "failed"


def advance(move: Move) -> None:
    """Move the run as far as it can go without waiting on anything outside."""
    state = move.run.state
    if state in (RunState.RUNNING, RunState.WAITING):
        status, failed = sequence(move, move.flow.steps)
        if status is Status.DONE:
            _succeed_run(move)
        elif status is Status.FAILED and failed is not None:
            begin_failure(move, failed)
        else:
            _settle(move)
    if move.run.state is RunState.COMPENSATING:
        _compensate(move)


def _settle(move: Move) -> None:
    moving = StepState.RUNNING in map(_STATE, move.steps.values())
    state = RunState.RUNNING if moving else RunState.WAITING
    if state is not move.run.state:
        move.set_run(state=state)


def sequence(
    move: Move, steps: Sequence[Step], *, lenient: bool = False
) -> tuple[Status, StepRun | None]:
    """Plan steps in order; stop at the first that is not done."""
    for step in steps:
        # A finished step is the common case of a long sequence, answered here
        # without a call: the planner walks every step of it on every transition.
        row = move.steps.get(step.id)
        if row is not None and row.state in _DONE:
            continue
        status = plan_step(move, step)
        if status is Status.DONE:
            continue
        if status is Status.FAILED:
            if step.continue_on_error or lenient:
                continue
            return Status.FAILED, move.steps[step.id]
        return Status.BLOCKED, None
    return Status.DONE, None


def plan_step(move: Move, step: Step) -> Status:
    """Start the step if it has not started; report where it stands."""
    row = move.steps.get(step.id)
    if row is None or row.state is StepState.PENDING:
        if not _start(move, step, row):
            return Status.FAILED if move.steps[step.id].state.failed else Status.DONE
        row = move.steps[step.id]
    if row.state in _DONE:
        return Status.DONE
    if row.state.failed or row.state is StepState.CANCELLED:
        return Status.FAILED
    if isinstance(step, ParallelStep):
        return _parallel(move, step, row)
    if isinstance(step, HttpStep | NotifyStep | SubFlowStep) and step.for_each is not None:
        return _for_each(move, step, row)
    return Status.BLOCKED


def _fresh(move: Move, step: Step, key: str, old: StepRun | None) -> StepRun:
    if old is not None:
        return evolve(old, error=None, output=None, failures=0, detail={})
    return StepRun(
        run_id=move.run.id, key=key, step_id=step.id, kind=step.kind, state=StepState.PENDING
    )


def _fail_now(move: Move, row: StepRun, message: str) -> None:
    """The step could not even start (a bad template, an unknown flow): fail it for good."""
    move.set_step(
        evolve(
            row,
            state=StepState.FAILED,
            started_at=row.started_at or move.now,
            error={"message": message, "retryable": False},
        )
    )
    move.audit("engine", "step.failed", step=row.key, error=message)


def _start(move: Move, step: Step, old: StepRun | None) -> bool:
    """Start a step. False when it finished on the spot (skipped, or failed to start)."""
    row = _fresh(move, step, step.id, old)
    if step.when is not None:
        try:
            go = bool(evaluate(step.when, move.scope()))
        except TemplateError as exc:
            _fail_now(move, row, f"`when` of {step.id}: {exc.message}")
            return False
        if not go:
            move.set_step(evolve(row, state=StepState.SKIPPED, detail={"why": "when"}))
            move.audit("engine", "step.skipped", step=step.id, why="condition was false")
            return False
    if isinstance(step, HttpStep | NotifyStep | SubFlowStep) and step.for_each is not None:
        return _start_for_each(move, step, row)
    if isinstance(step, ParallelStep):
        move.set_step(evolve(row, state=StepState.WAITING, started_at=move.now))
        move.audit("engine", "step.started", step=step.id)
        return True
    return start_action(move, step, row, {})


def start_action(move: Move, step: Step, row: StepRun, extra: dict[str, Any]) -> bool:
    """Begin what a leaf step does. False if it could not begin (and so failed)."""
    move.steps[row.key] = row
    if isinstance(step, ApprovalStep):
        return _start_approval(move, step, row, extra)
    if isinstance(step, WaitStep):
        return _start_wait(move, step, row, extra)
    if isinstance(step, SubFlowStep):
        return _start_child(move, step, row, extra)
    move.execute(row.key)
    move.audit("engine", "step.started", step=row.key, attempt=move.steps[row.key].attempt)
    return True


def _start_for_each(move: Move, step: HttpStep | NotifyStep | SubFlowStep, row: StepRun) -> bool:
    assert step.for_each is not None
    items: Any = step.for_each.items
    if isinstance(items, str):
        try:
            items = render_value(items, move.scope())
        except TemplateError as exc:
            _fail_now(move, row, f"`for_each` of {step.id}: {exc.message}")
            return False
    if not isinstance(items, list | tuple):
        _fail_now(move, row, f"`for_each` of {step.id} gave {type(items).__name__}, not a list")
        return False
    if len(items) > MAX_ITEMS:
        _fail_now(move, row, f"`for_each` of {step.id} gave {len(items)} items (max {MAX_ITEMS})")
        return False
    move.set_step(
        evolve(row, state=StepState.WAITING, started_at=move.now, detail={"items": list(items)})
    )
    move.audit("engine", "step.started", step=step.id, items=len(items))
    return True


def item_key(step_id: str, index: int) -> str:
    """The row key of one item of a ``for_each``."""
    return f"{step_id}[{index}]"


def _for_each(move: Move, step: HttpStep | NotifyStep | SubFlowStep, row: StepRun) -> Status:
    assert step.for_each is not None
    items: list[Any] = row.detail.get("items", [])
    active = 0
    done = 0
    failed: StepRun | None = None
    for index in range(len(items)):
        child = move.steps.get(item_key(step.id, index))
        if child is None or child.state is StepState.PENDING:
            continue
        if child.state.active:
            active += 1
        elif child.state in (StepState.SUCCEEDED, StepState.SKIPPED):
            done += 1
        elif failed is None:
            failed = child
    if failed is not None:
        message = f"item {failed.key} failed: {(failed.error or {}).get('message', '')}"
        keys = _item_keys(step.id, len(items))
        _fail_container(move, row, message, keys, rejected=was_rejected(failed))
        return Status.FAILED
    for index in range(len(items)):
        if active >= step.for_each.concurrency:
            break
        key = item_key(step.id, index)
        child = move.steps.get(key)
        if child is not None and child.state is not StepState.PENDING:
            continue
        fresh = _fresh(move, step, key, child)
        extra = {step.for_each.as_: items[index], "index": index}
        if start_action(move, step, fresh, extra):
            active += 1
        else:
            _fail_container(move, row, f"item {key} failed", _item_keys(step.id, len(items)))
            return Status.FAILED
    if done == len(items):
        outputs = [move.steps[item_key(step.id, i)].output for i in range(len(items))]
        move.update_step(row.key, state=StepState.SUCCEEDED, output=outputs)
        move.audit("engine", "step.succeeded", step=row.key)
        return Status.DONE
    return Status.BLOCKED


def _item_keys(step_id: str, count: int) -> list[str]:
    return [item_key(step_id, i) for i in range(count)]


def _parallel(move: Move, step: ParallelStep, row: StepRun) -> Status:
    results = [sequence(move, branch) for branch in step.branches.values()]
    failed = [row_ for status, row_ in results if status is Status.FAILED and row_ is not None]
    if failed:
        keys = [s.id for _, s in step.children()]
        message = f"{failed[0].key} failed: {(failed[0].error or {}).get('message', '')}"
        _fail_container(move, row, message, keys, rejected=was_rejected(failed[0]))
        return Status.FAILED
    if all(status is Status.DONE for status, _ in results):
        move.update_step(row.key, state=StepState.SUCCEEDED, output={})
        move.audit("engine", "step.succeeded", step=row.key)
        return Status.DONE
    return Status.BLOCKED


def _fail_container(
    move: Move, row: StepRun, message: str, inner: list[str], *, rejected: bool = False
) -> None:
    """Fail fast: stop every still-active step inside the container, then fail it.

    ``rejected``: the cause is an approval rejected inside it; the container keeps
    that in its error so the run ends as a rejection (no alert, no retry), not a failure.
    """
    for key in list(move.steps):
        if _inside(key, inner) and move.steps[key].state.active:
            move.abort(key)
    error = {"message": message, "reason": "rejected"} if rejected else {"message": message}
    move.update_step(row.key, state=StepState.FAILED, error=error)
    move.audit("engine", "step.failed", step=row.key, error=message)


def was_rejected(row: StepRun) -> bool:
    """Whether the step ended by a rejection: its own, or one inside it (a parallel)."""
    return row.state is StepState.REJECTED or (row.error or {}).get("reason") == "rejected"


def _inside(key: str, inner: list[str]) -> bool:
    base = key.split("[", 1)[0]
    return key in inner or base in inner


def _start_approval(move: Move, step: ApprovalStep, row: StepRun, extra: dict[str, Any]) -> bool:
    scope = move.scope(extra)
    try:
        question = render(step.question, scope)
        details = render(step.details, scope) if step.details else None
    except TemplateError as exc:
        _fail_now(move, row, f"question of {step.id}: {exc.message}")
        return False
    move.set_step(
        evolve(
            row,
            state=StepState.WAITING,
            started_at=move.now,
            detail={"question": question, "details": details},
        )
    )
    deadline = move.now + step.timeout if step.timeout else None
    # Asked again after a retry: start this request strictly after the votes of the
    # earlier one, so that they no longer count (see ``approvals.current``).
    earlier = [vote.at for vote in move.votes if vote.step_key == row.key]
    requested = max([move.now, *(at + timedelta(microseconds=1) for at in earlier)])
    asked_before = move.approvals.get(row.key)
    move.set_approval(
        Approval(
            run_id=move.run.id,
            step_key=row.key,
            level=0,
            round=asked_before.round + 1 if asked_before else 0,
            requested_at=requested,
            deadline=deadline,
        )
    )
    arm_approval_timers(move, row.key, step.levels()[0].remind_every, deadline)
    move.effect("approval", row.key, new=True)
    move.audit("engine", "approval.requested", step=row.key, question=question)
    return True


def arm_approval_timers(move: Move, key: str, remind_every: Any, deadline: datetime | None) -> None:
    """Set the timeout and first reminder of the approval's current level."""
    move.clear_timer(key, TimerPurpose.APPROVAL_TIMEOUT)
    move.clear_timer(key, TimerPurpose.REMINDER)
    if deadline is not None:
        move.set_timer(key, TimerPurpose.APPROVAL_TIMEOUT, deadline)
    if remind_every:
        first = move.now + remind_every
        if deadline is None or first < deadline:
            move.set_timer(key, TimerPurpose.REMINDER, first)


def _start_wait(move: Move, step: WaitStep, row: StepRun, extra: dict[str, Any]) -> bool:
    if step.duration is not None:
        due = move.now + step.duration
    else:
        assert step.until is not None
        try:
            text = render(step.until, move.scope(extra)).strip()
            due = datetime.fromisoformat(text)
        except (TemplateError, ValueError) as exc:
            message = exc.message if isinstance(exc, TemplateError) else str(exc)
            _fail_now(move, row, f"`until` of {step.id} is not a date-time: {message}")
            return False
        if due.tzinfo is None:
            _fail_now(move, row, f"`until` of {step.id} needs a time zone, e.g. +00:00")
            return False
    move.set_step(
        evolve(row, state=StepState.WAITING, started_at=move.now, detail={"until": due.isoformat()})
    )
    move.set_timer(row.key, TimerPurpose.WAIT, due)
    move.audit("engine", "step.waiting", step=row.key, until=due.isoformat())
    return True


def child_id(run_id: str, key: str, attempt: int) -> str:
    """A sub-run's id, derived so that re-deciding the same start names the same run."""
    digest = hashlib.sha256(f"{run_id}/{key}/{attempt}".encode()).hexdigest()
    return digest[:12]


def _start_child(move: Move, step: SubFlowStep, row: StepRun, extra: dict[str, Any]) -> bool:
    from bot.engine.events import StartRun

    definition = move.ctx.definitions(step.flow)
    if definition is None:
        _fail_now(move, row, f"flow `{step.flow}` is not loaded")
        return False
    try:
        inputs = render_data(dict(step.inputs), move.scope(extra))
    except TemplateError as exc:
        _fail_now(move, row, f"inputs of {step.id}: {exc.message}")
        return False
    attempt = row.attempt + 1
    child = Run(
        id=child_id(move.run.id, row.key, attempt),
        flow=step.flow,
        definition=definition.data,
        definition_hash=definition.hash,
        state=RunState.RUNNING,
        inputs=inputs,
        started_by=move.run.started_by,
        source=move.run.source,
        created_at=move.now,
        updated_at=move.now,
        parent_run_id=move.run.id,
        parent_step_key=row.key,
    )
    move.new_runs.append(child)
    move.emits.append((child.id, StartRun(actor=f"run:{move.run.id}")))
    move.set_step(
        evolve(
            row,
            state=StepState.WAITING,
            attempt=attempt,
            started_at=move.now,
            detail={"child_run_id": child.id},
        )
    )
    move.audit("engine", "step.started", step=row.key, child_run=child.id)
    return True


def begin_failure(move: Move, failed: StepRun) -> None:
    """A step failed for good: plan the undo steps, then ``on_failure``, then end."""
    reason = "rejected" if was_rejected(failed) else "failed"
    message = (failed.error or {}).get("message", f"step {failed.key} {failed.state.value}")
    _fail_run(move, step_key=failed.key, reason=reason, message=message)


def _fail_run(move: Move, *, step_key: str, reason: str, message: str) -> None:
    """Start failure handling; ``step_key`` is empty when no step failed (``outputs``)."""
    undo = undo_plan(move)
    move.set_run(
        state=RunState.COMPENSATING,
        error={"reason": reason, "step": step_key, "message": message},
        undo_plan=undo,
    )
    if reason == "failed":
        move.effect("alert", step_key)
    move.audit("engine", "run.failing", step=step_key, reason=reason, undo=list(undo))


def undo_plan(move: Move) -> tuple[str, ...]:
    """Steps with ``compensate`` that finished, most recent first."""
    done = [
        row
        for row in move.steps.values()
        if row.key == row.step_id and row.state is StepState.SUCCEEDED
    ]
    done.sort(key=lambda row: row.finish_seq, reverse=True)
    plan = []
    for row in done:
        try:
            step = move.flow.step(row.step_id)
        except KeyError:
            continue
        if step.compensate:
            plan.append(row.step_id)
    return tuple(plan)


def _compensate(move: Move) -> None:
    cancelled = (move.run.error or {}).get("reason") == "cancelled"
    steps: list[Step] = [
        undo for sid in move.run.undo_plan for undo in move.flow.step(sid).compensate
    ]
    if not cancelled:
        steps.extend(move.flow.on_failure)
    status, _ = sequence(move, steps, lenient=True)
    if status is not Status.DONE:
        return
    for sid in move.run.undo_plan:
        if move.steps[sid].state is StepState.SUCCEEDED:
            move.update_step(sid, state=StepState.COMPENSATED)
    failed_undo = [s.id for s in steps if move.steps.get(s.id) and move.steps[s.id].state.failed]
    error = dict(move.run.error or {})
    if failed_undo:
        error["cleanup_failed"] = failed_undo
    final = RunState.CANCELLED if cancelled else RunState.FAILED
    move.set_run(state=final, finished_at=move.now, error=error)
    move.audit("engine", f"run.{final.value}", **error)
    tell_parent(move)


def _succeed_run(move: Move) -> None:
    outputs: dict[str, Any] = {}
    scope = move.scope()
    for name, template in move.flow.outputs.items():
        try:
            outputs[name] = render_value(template, scope)
        except TemplateError as exc:
            # The run's last act failed: undo and clean up as for a failed step,
            # as the failure-handling docs promise for any failure of a run.
            _fail_run(move, step_key="", reason="failed", message=f"output {name}: {exc.message}")
            return
    move.set_run(state=RunState.SUCCEEDED, finished_at=move.now, outputs=outputs)
    move.audit("engine", "run.succeeded")
    tell_parent(move)


def tell_parent(move: Move) -> None:
    """A sub-flow's run just ended: emit the event that finishes its parent's step."""
    from bot.engine.events import child_finished

    run = move.run
    if run.parent_run_id is None or run.parent_step_key is None:
        return
    move.emits.append((run.parent_run_id, child_finished(run, run.parent_step_key)))
