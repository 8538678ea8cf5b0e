"""Behaviour of the machine when things go wrong: cancel, failure, undo, retry, skip, sub-flows."""

from __future__ import annotations

from bot.engine.events import Cancel, Retry, Skip
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from tests.unit.engine.harness import World, executed, running, world
from tests.unit.engine.samples import CHILD, FE, PARENT, RETRYING, SEQ, UNDO, approval, fail_at_d

REJECTED = Decision.REJECTED
RETRY = TimerPurpose.RETRY


# ---------------------------------------------------------------- cancel


CANCELLABLE = """
name: cx
steps:
  - {id: a, kind: http, url: "http://x/a", compensate: [{id: undo_a, kind: http, url: "http://x/u"}]}
  - id: p
    kind: parallel
    branches:
      one: [{id: b, kind: http, url: "http://x/b"}]
      two: [{id: ok, kind: approval, question: "?", approvers: {users: [U0A]}}]
on_failure:
  - {id: page, kind: notify, text: "failed"}
"""


def test_cancel_aborts_undoes_and_ends_cancelled_without_on_failure() -> None:
    w = world(CANCELLABLE)
    r = w.start("cx")
    w.succeed(r, "a")
    t = w.apply(r, Cancel(actor="U0OPS", reason="wrong order"))
    assert t.aborts == ("b",)
    assert w.step(r, "b").state is StepState.CANCELLED
    assert w.step(r, "ok").state is StepState.CANCELLED
    assert w.snapshots[r].approvals["ok"].state == "cancelled"
    assert executed(t) == [("undo_a", 1)]
    assert w.run(r).state is RunState.COMPENSATING
    t = w.succeed(r, "undo_a")
    assert w.run(r).state is RunState.CANCELLED
    assert w.step(r, "a").state is StepState.COMPENSATED
    assert "page" not in w.snapshots[r].steps
    assert w.run(r).error["reason"] == "cancelled"
    assert not any(e.kind == "alert" for _, _, t in w.log for e in t.chat)
    assert w.apply(r, Cancel(actor="U0OPS")).changed is False


def test_cancel_without_anything_to_undo_ends_at_once() -> None:
    w = world(SEQ)
    r = w.start("seq")
    t = w.apply(r, Cancel(actor="U0OPS"))
    assert t.aborts == ("a",)
    assert w.run(r).state is RunState.CANCELLED
    assert w.snapshots[r].timers == ()


def test_cancel_of_a_failed_run_closes_it() -> None:
    w = world(SEQ)
    r = w.start("seq")
    w.fail(r, "a")
    assert w.run(r).state is RunState.FAILED
    t = w.apply(r, Cancel(actor="U0OPS"))
    assert t.changed
    assert w.run(r).state is RunState.CANCELLED
    assert w.apply(r, Retry(actor="U0OPS")).changed is False


def test_cancel_of_a_succeeded_run_is_refused() -> None:
    w = world(SEQ)
    r = w.start("seq")
    for key in ("a", "b", "c"):
        w.succeed(r, key)
    t = w.apply(r, Cancel(actor="U0OPS"))
    assert t.changed is False
    assert "succeeded" in (t.reply or "")


# ---------------------------------------------------------------- failure and compensation


def test_failure_runs_compensations_in_reverse_then_on_failure() -> None:
    w = world(UNDO)
    r = fail_at_d(w)
    assert w.run(r).state is RunState.COMPENSATING
    assert w.run(r).undo_plan == ("c", "a")
    order = []
    while w.run(r).state is RunState.COMPENSATING:
        (key,) = running(w, r)
        order.append(key)
        w.succeed(r, key)
    assert order == ["undo_c1", "undo_c2", "undo_a", "page"]
    run = w.run(r)
    assert run.state is RunState.FAILED
    assert run.error["step"] == "d"
    assert run.error["reason"] == "failed"
    assert "409" in run.error["message"]
    assert "cleanup_failed" not in run.error
    assert w.step(r, "a").state is StepState.COMPENSATED
    assert w.step(r, "c").state is StepState.COMPENSATED
    assert w.step(r, "b").state is StepState.SUCCEEDED


def test_failure_raises_an_alert_once() -> None:
    w = world(UNDO)
    r = fail_at_d(w)
    alerts = [e for _, _, t in w.log for e in t.chat if e.kind == "alert"]
    assert [(e.run_id, e.step_key) for e in alerts] == [(r, "d")]


def test_rejection_raises_no_alert() -> None:
    w = world(approval())
    r = w.start("ap")
    w.vote(r, "ok", "U0A", REJECTED, reason="no")
    assert w.run(r).state is RunState.FAILED
    assert not any(e.kind == "alert" for _, _, t in w.log for e in t.chat)


def test_a_failing_compensation_does_not_stop_the_rest() -> None:
    w = world(UNDO)
    r = fail_at_d(w)
    w.fail(r, "undo_c1", "gone")
    assert running(w, r) == ["undo_c2"]
    w.succeed(r, "undo_c2")
    w.succeed(r, "undo_a")
    w.succeed(r, "page")
    run = w.run(r)
    assert run.state is RunState.FAILED
    assert run.error["cleanup_failed"] == ["undo_c1"]
    assert run.error["step"] == "d"


def test_continue_on_error_carries_on() -> None:
    w = world(
        """
name: coe
steps:
  - {id: a, kind: http, url: "http://x/a", continue_on_error: true}
  - {id: b, kind: http, url: "http://x/b"}
"""
    )
    r = w.start("coe")
    t = w.fail(r, "a")
    assert executed(t) == [("b", 1)]
    w.succeed(r, "b")
    assert w.run(r).state is RunState.SUCCEEDED


def test_a_rejection_inside_a_parallel_is_a_rejection_not_a_failure() -> None:
    w = world(
        """
name: par
steps:
  - id: p
    kind: parallel
    branches:
      one: [{id: b, kind: http, url: "http://x/b"}]
      two: [{id: ok, kind: approval, question: "?", approvers: {users: [U0A]}}]
"""
    )
    r = w.start("par")
    t = w.vote(r, "ok", "U0A", REJECTED, reason="no")
    assert t.aborts == ("b",)
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).error["reason"] == "rejected"
    assert not any(e.kind == "alert" for _, _, t in w.log for e in t.chat)
    assert w.apply(r, Retry(actor="U0OPS")).changed is False
    assert w.apply(r, Skip(actor="U0OPS")).changed is False


# ---------------------------------------------------------------- retry and skip


def test_retry_reruns_the_failed_step_and_undone_ones_keeping_the_rest() -> None:
    w = world(UNDO)
    r = fail_at_d(w)
    for key in ("undo_c1", "undo_c2", "undo_a", "page"):
        w.succeed(r, key)
    t = w.apply(r, Retry(actor="U0OPS"))
    assert t.changed
    assert w.run(r).state is RunState.RUNNING
    assert w.run(r).error is None
    assert executed(t) == [("a", 2)]
    assert w.step(r, "b").state is StepState.SUCCEEDED
    assert w.step(r, "c").state is StepState.PENDING
    assert w.step(r, "d").state is StepState.PENDING
    w.succeed(r, "a")  # b is kept
    assert running(w, r) == ["c"]
    w.succeed(r, "c")
    t = w.succeed(r, "d")
    assert w.run(r).state is RunState.SUCCEEDED
    assert w.step(r, "d").attempt == 2


def test_retry_refuses_a_rejection() -> None:
    w = world(approval())
    r = w.start("ap")
    w.vote(r, "ok", "U0A", REJECTED, reason="no")
    t = w.apply(r, Retry(actor="U0OPS"))
    assert t.changed is False
    assert "rejection" in (t.reply or "")
    assert w.apply(r, Skip(actor="U0OPS", key="ok")).changed is False


def test_retry_refuses_a_running_run() -> None:
    w = world(SEQ)
    r = w.start("seq")
    t = w.apply(r, Retry(actor="U0OPS"))
    assert t.changed is False
    assert "only a failed run" in (t.reply or "")


def test_skip_of_a_failed_step_continues_after_it() -> None:
    w = world(SEQ)
    r = w.start("seq")
    w.succeed(r, "a")
    w.fail(r, "b")
    t = w.apply(r, Skip(actor="U0OPS"))
    assert t.changed
    assert w.step(r, "b").state is StepState.SKIPPED
    assert executed(t) == [("c", 1)]
    w.succeed(r, "c")
    assert w.run(r).state is RunState.SUCCEEDED


def test_skip_of_a_retrying_step_in_a_live_run() -> None:
    w = world(RETRYING + '  - {id: b, kind: http, url: "http://x/b"}\n')
    r = w.start("rt")
    w.fail(r, "a", "503", retryable=True)
    t = w.apply(r, Skip(actor="U0OPS", key="a"))
    assert w.step(r, "a").state is StepState.SKIPPED
    assert w.timer(r, "a", RETRY) is None
    assert executed(t) == [("b", 1)]


def test_skip_refuses_a_running_step() -> None:
    w = world(SEQ)
    r = w.start("seq")
    assert w.apply(r, Skip(actor="U0OPS", key="a")).changed is False
    assert w.apply(r, Skip(actor="U0OPS")).changed is False


def test_skip_of_a_failed_for_each_item_completes_the_for_each() -> None:
    w = world(FE)
    r = w.start("fe")
    w.succeed(r, "fe[0]", "A")
    w.fail(r, "fe[1]", "bad")
    assert w.run(r).state is RunState.FAILED
    t = w.apply(r, Skip(actor="U0OPS", key="fe[1]"))
    assert t.changed
    assert w.step(r, "fe[1]").state is StepState.SKIPPED
    assert w.step(r, "fe").state is StepState.WAITING
    for key in ("fe[2]", "fe[3]", "fe[4]"):
        w.succeed(r, key, key)
    assert w.step(r, "fe").state is StepState.SUCCEEDED
    assert w.step(r, "fe").output == ["A", None, "fe[2]", "fe[3]", "fe[4]"]
    assert running(w, r) == ["after"]


# ---------------------------------------------------------------- sub-flows


def child_of(w: World, parent: str) -> str:
    return str(w.step(parent, "sub").detail["child_run_id"])


def test_sub_flow_success_fills_the_parent_output() -> None:
    w = world(PARENT, CHILD)
    r = w.start("parent")
    c = child_of(w, r)
    assert w.run(c).parent_run_id == r
    assert w.run(c).inputs == {"n": 2}
    assert w.step(c, "work").state is StepState.RUNNING
    w.succeed(c, "work", {"total": 7})
    assert w.run(c).state is RunState.SUCCEEDED
    assert w.step(r, "sub").state is StepState.SUCCEEDED
    assert w.step(r, "sub").output == {"total": 7}
    assert w.step(r, "after").state is StepState.RUNNING


def test_sub_flow_failure_fails_the_parent_step() -> None:
    w = world(PARENT, CHILD)
    r = w.start("parent")
    c = child_of(w, r)
    w.fail(c, "work", "500")
    assert w.run(c).state is RunState.FAILED
    assert w.step(r, "sub").state is StepState.FAILED
    assert c in w.step(r, "sub").error["message"]
    assert w.run(r).state is RunState.FAILED


def test_cancelling_the_parent_cancels_the_child() -> None:
    w = world(PARENT, CHILD)
    r = w.start("parent")
    c = child_of(w, r)
    w.apply(r, Cancel(actor="U0OPS"))
    assert w.run(r).state is RunState.CANCELLED
    assert w.run(c).state is RunState.CANCELLED
    assert w.step(c, "work").state is StepState.CANCELLED


def test_an_unknown_sub_flow_fails_the_step() -> None:
    w = world(PARENT)
    r = w.start("parent")
    assert w.step(r, "sub").state is StepState.FAILED
    assert "not loaded" in w.step(r, "sub").error["message"]


SUB_CHILD = """
name: child
inputs: {n: {type: integer, default: 0}}
steps:
  - {id: work, kind: http, url: "http://x/{{ inputs.n }}"}
  - {id: more, kind: http, url: "http://x/more"}
"""


def test_parallel_fail_fast_cancels_a_sibling_sub_flow_run() -> None:
    w = world(
        """
name: par
steps:
  - id: p
    kind: parallel
    branches:
      one: [{id: b, kind: http, url: "http://x/b"}]
      two: [{id: sub, kind: flow, flow: child}]
""",
        SUB_CHILD,
    )
    r = w.start("par")
    c = child_of(w, r)
    w.fail(r, "b")
    assert w.step(r, "sub").state is StepState.CANCELLED
    assert w.run(c).state is RunState.CANCELLED
    assert w.step(c, "work").state is StepState.CANCELLED


def test_cancelling_the_parent_cancels_every_for_each_sub_flow_run() -> None:
    w = world(
        """
name: fan
steps:
  - {id: fe, kind: flow, flow: child, inputs: {n: "{{ item }}"}, for_each: {items: [1, 2]}}
""",
        SUB_CHILD,
    )
    r = w.start("fan")
    kids = [w.step(r, f"fe[{i}]").detail["child_run_id"] for i in range(2)]
    assert len(set(kids)) == 2
    w.apply(r, Cancel(actor="U0OPS"))
    assert w.run(r).state is RunState.CANCELLED
    assert [w.run(k).state for k in kids] == [RunState.CANCELLED, RunState.CANCELLED]


def test_cancelling_a_child_while_it_compensates_still_tells_the_parent() -> None:
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
    c = child_of(w, r)
    w.succeed(c, "work")
    w.fail(c, "more")
    assert w.run(c).state is RunState.COMPENSATING
    w.apply(c, Cancel(actor="U0OPS"))
    assert w.run(c).state is RunState.CANCELLED
    assert w.step(r, "sub").state is StepState.FAILED
    assert w.run(r).state is RunState.FAILED


def test_a_failed_sub_flow_run_is_retried_through_its_parent() -> None:
    w = world(PARENT, CHILD)
    r = w.start("parent")
    c = child_of(w, r)
    w.fail(c, "work", "500")
    t = w.apply(c, Retry(actor="U0OPS"))
    assert t.changed is False
    assert f"retry or skip in run {r}" in (t.reply or "")
    assert w.apply(c, Skip(actor="U0OPS")).changed is False
    w.apply(r, Retry(actor="U0OPS"))
    c2 = child_of(w, r)
    assert c2 != c
    w.succeed(c2, "work", {"total": 1})
    assert w.step(r, "sub").output == {"total": 1}
