"""How a run ends when its end is unusual: a worker that keeps dying, a cancel during
failure handling, a broken ``outputs`` template, a sub-flow ended by a rejection.

Each case must end through the same failure handling as an ordinary step failure
(compensation, ``on_failure``, alert), keep the reason it failed, and tell a parent
run what actually happened.
"""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

from bot.engine.events import Cancel, ChildFinished, LeaseExpired, Retry, Skip
from bot.engine.machine import ABANDON_LIMIT
from bot.engine.ports import RunView
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from bot.terminal import TerminalChat
from tests.unit.engine.harness import World, definition, executed, running, world
from tests.unit.engine.samples import CHILD, PARENT, RETRYING, SEQ, UNDO, fail_at_d

RETRY = TimerPurpose.RETRY
STOPPED = "the worker stopped 3 times while running this step; it was not retried again"


def lapse(w: World, run: str, key: str) -> None:
    """Let the lease of the step's current attempt lapse, and have a worker notice."""
    row = w.step(run, key)
    assert row.lease_until is not None
    w.now = row.lease_until + timedelta(seconds=1)
    assert w.apply(run, LeaseExpired(key=key, attempt=row.attempt)).changed


def alerts(w: World, run: str) -> list[str]:
    return [e.step_key for rid, _, t in w.log if rid == run for e in t.chat if e.kind == "alert"]


# ---------------------------------------------------------------- a worker that keeps dying


def test_the_limit_is_three() -> None:
    assert ABANDON_LIMIT == 3


def test_a_step_that_stops_its_worker_every_time_fails_for_good_after_three() -> None:
    w = world(UNDO)
    r = w.start("undo")
    for key in ("a", "b", "c"):
        w.succeed(r, key)
    lapse(w, r, "d")
    lapse(w, r, "d")
    assert w.step(r, "d").state is StepState.RUNNING
    assert w.step(r, "d").attempt == 3
    lapse(w, r, "d")
    row = w.step(r, "d")
    assert row.state is StepState.FAILED
    assert row.error["message"] == STOPPED
    assert row.error["retryable"] is False
    assert row.failures == 0
    assert row.lease_owner is None
    # Ordinary failure handling: undo, on_failure, alert, the reason kept on the run.
    assert w.run(r).state is RunState.COMPENSATING
    assert w.run(r).error == {"reason": "failed", "step": "d", "message": STOPPED}
    assert alerts(w, r) == ["d"]
    while w.run(r).state is RunState.COMPENSATING:
        (key,) = running(w, r)
        w.succeed(r, key)
    assert w.run(r).state is RunState.FAILED
    assert "page" in w.snapshots[r].steps
    assert w.step(r, "a").state is StepState.COMPENSATED


def test_abandoned_attempts_do_not_use_the_retry_budget() -> None:
    w = world(RETRYING)  # attempts: 4
    r = w.start("rt")
    for _ in range(ABANDON_LIMIT - 1):
        lapse(w, r, "a")
    assert w.step(r, "a").failures == 0
    # An attempt that reports a failure ends the streak of crashes.
    w.fail(r, "a", "503", retryable=True)
    assert w.step(r, "a").state is StepState.RETRYING
    assert w.step(r, "a").failures == 1
    w.now = w.timer(r, "a", RETRY).due_at
    w.fire(r, "a", RETRY)
    for _ in range(ABANDON_LIMIT - 1):
        lapse(w, r, "a")
    row = w.step(r, "a")
    assert (row.state, row.failures) == (StepState.RUNNING, 1)
    assert w.succeed(r, "a").changed
    assert w.run(r).state is RunState.SUCCEEDED


def test_a_step_that_keeps_stopping_its_worker_may_continue_on_error() -> None:
    w = world(
        """
name: coe
steps:
  - {id: a, kind: http, url: "http://x/a", continue_on_error: true}
  - {id: b, kind: http, url: "http://x/b"}
"""
    )
    r = w.start("coe")
    for _ in range(ABANDON_LIMIT):
        lapse(w, r, "a")
    assert w.step(r, "a").state is StepState.FAILED
    assert running(w, r) == ["b"]
    assert alerts(w, r) == []


def test_an_operator_retry_gives_the_step_a_fresh_count() -> None:
    w = world(SEQ)
    r = w.start("seq")
    for _ in range(ABANDON_LIMIT):
        lapse(w, r, "a")
    assert w.run(r).state is RunState.FAILED
    t = w.apply(r, Retry(actor="U0OPS"))
    assert executed(t) == [("a", ABANDON_LIMIT + 1)]
    lapse(w, r, "a")
    assert w.step(r, "a").state is StepState.RUNNING


# ---------------------------------------------------------------- cancel during failure handling


def test_cancel_during_compensation_keeps_the_original_failure() -> None:
    w = world(UNDO)
    r = fail_at_d(w)
    assert running(w, r) == ["undo_c1"]
    t = w.apply(r, Cancel(actor="U0OPS", reason="enough"))
    assert t.aborts == ("undo_c1",)
    run = w.run(r)
    assert run.state is RunState.CANCELLED
    assert run.error["reason"] == "failed"
    assert run.error["step"] == "d"
    assert "409" in run.error["message"]
    assert run.error["cancelled"] == {"by": "U0OPS", "message": "enough"}
    (cancel,) = [e for e in t.audit if e.action == "run.cancel"]
    assert cancel.detail["stopped"] == ["undo_c1"]
    assert cancel.detail["failure"] == run.error["message"]


def test_cancel_during_compensation_tells_a_parent_the_original_failure() -> None:
    w = world(
        PARENT,
        """
name: child
inputs: {n: {type: integer}}
steps:
  - {id: work, kind: http, url: "http://x/w", compensate: [{id: undo, kind: http, url: "http://x/u"}]}
  - {id: more, kind: http, url: "http://x/more"}
""",
    )
    r = w.start("parent")
    c = str(w.step(r, "sub").detail["child_run_id"])
    w.succeed(c, "work")
    w.fail(c, "more", "HTTP 500")
    w.apply(c, Cancel(actor="U0OPS"))
    assert w.run(c).state is RunState.CANCELLED
    assert "HTTP 500" in w.step(r, "sub").error["message"]


# ---------------------------------------------------------------- outputs


OUTPUTS = """
name: out
steps:
  - {id: a, kind: http, url: "http://x/a", compensate: [{id: undo_a, kind: http, url: "http://x/u"}]}
on_failure:
  - {id: page, kind: notify, text: "failed"}
outputs: {total: "{{ steps.a.output.missing }}"}
"""


def test_a_broken_output_fails_the_run_like_a_step_failure() -> None:
    w = world(OUTPUTS)
    r = w.start("out")
    w.succeed(r, "a", {})
    run = w.run(r)
    assert run.state is RunState.COMPENSATING
    assert run.error["reason"] == "failed"
    assert run.error["message"].startswith("output total:")
    assert run.undo_plan == ("a",)
    assert alerts(w, r) == [""]
    assert running(w, r) == ["undo_a"]
    w.succeed(r, "undo_a")
    w.succeed(r, "page")
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).outputs is None
    assert w.step(r, "a").state is StepState.COMPENSATED
    t = w.apply(r, Retry(actor="U0OPS"))
    assert t.changed is False
    assert "outputs" in (t.reply or "")


def test_a_broken_sub_flow_output_fails_the_parent_step_after_the_child_undid_its_work() -> None:
    w = world(PARENT, CHILD.replace("output.total", "output.total.nope"))
    r = w.start("parent")
    c = str(w.step(r, "sub").detail["child_run_id"])
    w.succeed(c, "work", {"total": 7})
    assert w.run(c).state is RunState.FAILED
    assert "output total" in w.step(r, "sub").error["message"]
    assert w.run(r).state is RunState.FAILED


# ---------------------------------------------------------------- a sub-flow ended by a rejection


REJECTING_CHILD = """
name: child
inputs: {n: {type: integer}}
steps:
  - {id: ok, kind: approval, question: "?", approvers: {users: [U0A]}}
"""


def test_a_rejected_sub_flow_is_a_rejection_in_the_parent() -> None:
    w = world(PARENT, REJECTING_CHILD)
    r = w.start("parent")
    c = str(w.step(r, "sub").detail["child_run_id"])
    w.vote(c, "ok", "U0A", Decision.REJECTED, reason="too much")
    emitted = [e for rid, e, _ in w.log if rid == r and isinstance(e, ChildFinished)]
    assert [(e.succeeded, e.rejected) for e in emitted] == [(False, True)]
    row = w.step(r, "sub")
    assert row.state is StepState.REJECTED
    assert row.error["message"] == f"sub-flow run {c} was rejected: rejected by U0A: too much"
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).error["reason"] == "rejected"
    assert alerts(w, r) == []
    assert w.apply(r, Retry(actor="U0OPS")).changed is False
    assert w.apply(r, Skip(actor="U0OPS", key="sub")).changed is False


def test_a_rejected_sub_flow_item_makes_the_for_each_a_rejection() -> None:
    w = world(
        """
name: parent
steps:
  - {id: fe, kind: flow, flow: child, inputs: {n: "{{ item }}"}, for_each: {items: [1, 2]}}
""",
        REJECTING_CHILD,
    )
    r = w.start("parent")
    c = str(w.step(r, "fe[0]").detail["child_run_id"])
    w.vote(c, "ok", "U0A", Decision.REJECTED, reason="no")
    assert w.step(r, "fe[0]").state is StepState.REJECTED
    assert w.step(r, "fe[1]").state is StepState.CANCELLED
    assert w.run(r).error["reason"] == "rejected"
    assert alerts(w, r) == []


def test_a_failed_sub_flow_is_still_a_failure() -> None:
    w = world(PARENT, CHILD)
    r = w.start("parent")
    c = str(w.step(r, "sub").detail["child_run_id"])
    w.fail(c, "work", "500")
    emitted = [e for rid, e, _ in w.log if rid == r and isinstance(e, ChildFinished)]
    assert [(e.succeeded, e.rejected) for e in emitted] == [(False, False)]
    assert w.step(r, "sub").state is StepState.FAILED
    assert alerts(w, r) == ["sub"]


def test_the_terminal_alerts_a_broken_output_with_the_run_error() -> None:
    w = world(OUTPUTS)
    r = w.start("out")
    w.succeed(r, "a", {})
    out = io.StringIO()
    view = RunView(snapshot=w.snapshots[r], flow=definition(OUTPUTS).flow)
    asyncio.run(TerminalChat(out=out).alert(view, ""))
    assert out.getvalue() == (
        f"  ! ALERT out run {r} failed for good: {w.run(r).error['message']}\n"
    )
