"""Behaviour of the pure machine, one concern per test: how steps run, retry, wait and are fenced.

Approvals are in ``test_machine_approvals.py``; cancel, failure, retry, skip and
sub-flows in ``test_machine_failures.py``. All go through the in-memory World.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from bot.engine.audit import verify_chain
from bot.engine.events import LeaseExpired, Retry, StepErrored, StepSucceeded, TimerDue
from bot.engine.states import RunState, StepState, TimerPurpose
from tests.unit.engine.harness import T0, executed, running, seconds_until, world
from tests.unit.engine.samples import FE, RETRYING, SEQ, UNDO, approval, fail_at_d

RETRY = TimerPurpose.RETRY
WAIT = TimerPurpose.WAIT
REMIND = TimerPurpose.REMINDER


# ---------------------------------------------------------------- sequences and conditions


def test_sequential_steps_run_one_after_another() -> None:
    w = world(SEQ)
    r = w.start("seq")
    assert executed(w.log[-1][2]) == [("a", 1)]
    assert w.run(r).state is RunState.RUNNING
    assert executed(w.succeed(r, "a", {"n": 1})) == [("b", 1)]
    assert executed(w.succeed(r, "b")) == [("c", 1)]
    t = w.succeed(r, "c")
    assert t.executions == ()
    assert w.run(r).state is RunState.SUCCEEDED
    assert w.run(r).finished_at == T0
    assert w.step(r, "a").output == {"n": 1}


def test_when_false_skips_the_step() -> None:
    w = world(
        """
name: cond
inputs: {n: {type: integer}}
steps:
  - {id: a, kind: http, url: "http://x/a", when: "inputs.n > 5"}
  - {id: b, kind: http, url: "http://x/b"}
"""
    )
    r = w.start("cond", {"n": 3})
    assert w.step(r, "a").state is StepState.SKIPPED
    assert executed(w.log[-1][2]) == [("b", 1)]


def test_when_template_error_fails_the_step() -> None:
    w = world(
        """
name: cond
steps:
  - {id: a, kind: http, url: "http://x/a", when: "inputs.missing > 5"}
  - {id: b, kind: http, url: "http://x/b"}
"""
    )
    r = w.start("cond")
    row = w.step(r, "a")
    assert row.state is StepState.FAILED
    assert "`when` of a" in row.error["message"]
    assert "b" not in w.snapshots[r].steps
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).error["step"] == "a"


# ---------------------------------------------------------------- parallel


PAR = """
name: par
steps:
  - id: p
    kind: parallel
    branches:
      one: [{id: b, kind: http, url: "http://x/b"}]
      two:
        - {id: c, kind: http, url: "http://x/c"}
        - {id: d, kind: http, url: "http://x/d"}
  - {id: after, kind: http, url: "http://x/after"}
"""


def test_parallel_joins_when_every_branch_is_done() -> None:
    w = world(PAR)
    r = w.start("par")
    assert sorted(executed(w.log[-1][2])) == [("b", 1), ("c", 1)]
    assert w.succeed(r, "b").executions == ()
    assert executed(w.succeed(r, "c")) == [("d", 1)]
    assert w.step(r, "p").state is StepState.WAITING
    assert executed(w.succeed(r, "d")) == [("after", 1)]
    assert w.step(r, "p").state is StepState.SUCCEEDED


def test_parallel_fails_fast_and_aborts_the_sibling_in_flight() -> None:
    w = world(PAR)
    r = w.start("par")
    t = w.fail(r, "b", "400 bad request", status=400)
    assert t.aborts == ("c",)
    assert w.step(r, "c").state is StepState.CANCELLED
    assert w.step(r, "p").state is StepState.FAILED
    assert "d" not in w.snapshots[r].steps
    assert "after" not in w.snapshots[r].steps
    assert w.run(r).state is RunState.FAILED
    abandoned = [a for a in t.attempts if a.step_key == "c"]
    assert [a.outcome for a in abandoned] == ["abandoned"]
    # The aborted worker's late answer changes nothing.
    late = w.apply(r, StepSucceeded(key="c", attempt=1, owner="w1", output={}))
    assert late.changed is False


def test_parallel_fail_fast_clears_a_sibling_backing_off() -> None:
    w = world(PAR)
    r = w.start("par")
    w.fail(r, "c", "503", retryable=True)
    assert w.timer(r, "c", RETRY) is not None
    t = w.fail(r, "b", "400")
    assert t.aborts == ()  # nothing in flight, only a timer to drop
    assert w.step(r, "c").state is StepState.CANCELLED
    assert w.snapshots[r].timers == ()


# ---------------------------------------------------------------- for_each


def test_for_each_respects_concurrency_and_keeps_output_order() -> None:
    w = world(FE)
    r = w.start("fe")
    assert running(w, r) == ["fe[0]", "fe[1]"]
    # Finish out of order: item 1 first.
    assert executed(w.succeed(r, "fe[1]", "B")) == [("fe[2]", 1)]
    assert running(w, r) == ["fe[0]", "fe[2]"]
    assert executed(w.succeed(r, "fe[2]", "C")) == [("fe[3]", 1)]
    assert executed(w.succeed(r, "fe[3]", "D")) == [("fe[4]", 1)]
    assert len(running(w, r)) == 2
    w.succeed(r, "fe[4]", "E")
    assert running(w, r) == ["fe[0]"]
    t = w.succeed(r, "fe[0]", "A")
    assert w.step(r, "fe").state is StepState.SUCCEEDED
    assert w.step(r, "fe").output == ["A", "B", "C", "D", "E"]
    assert executed(t) == [("after", 1)]


def test_for_each_never_exceeds_concurrency() -> None:
    w = world(FE)
    r = w.start("fe")
    for _ in range(5):
        assert len(running(w, r)) <= 2
        w.succeed(r, running(w, r)[-1], 1)
    assert w.step(r, "fe").state is StepState.SUCCEEDED


def test_for_each_item_failure_fails_the_step_and_aborts_active_items() -> None:
    w = world(FE)
    r = w.start("fe")
    t = w.fail(r, "fe[0]", "bad item")
    assert t.aborts == ("fe[1]",)
    assert w.step(r, "fe[1]").state is StepState.CANCELLED
    assert w.step(r, "fe").state is StepState.FAILED
    assert "fe[2]" not in w.snapshots[r].steps
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).error["step"] == "fe"


def test_for_each_items_from_a_template() -> None:
    w = world(
        """
name: fe
inputs: {skus: {type: list}}
steps:
  - {id: fe, kind: http, url: "http://x/{{ sku }}", for_each: {items: "{{ inputs.skus }}", as: sku}}
"""
    )
    r = w.start("fe", {"skus": ["x", "y"]})
    assert w.step(r, "fe").detail["items"] == ["x", "y"]
    assert running(w, r) == ["fe[0]", "fe[1]"]


def test_for_each_over_something_not_a_list_fails() -> None:
    w = world(
        """
name: fe
inputs: {n: {type: integer}}
steps:
  - {id: fe, kind: http, url: "http://x/{{ item }}", for_each: {items: "{{ inputs.n }}"}}
"""
    )
    r = w.start("fe", {"n": 3})
    assert w.step(r, "fe").state is StepState.FAILED
    assert "not a list" in w.step(r, "fe").error["message"]


# ---------------------------------------------------------------- retries


def test_retryable_error_backs_off_with_jitter_then_exponentially() -> None:
    w = world(RETRYING)
    r = w.start("rt")
    w.fail(r, "a", "503", retryable=True, status=503)
    assert w.step(r, "a").state is StepState.RETRYING
    assert w.run(r).state is RunState.WAITING
    assert 5 <= seconds_until(w, r, "a", RETRY) <= 10
    w.advance(10)
    t = w.fire(r, "a", RETRY)
    assert executed(t) == [("a", 2)]
    w.fail(r, "a", "503", retryable=True)
    assert 10 <= seconds_until(w, r, "a", RETRY) <= 20
    w.advance(20)
    w.fire(r, "a", RETRY)
    w.fail(r, "a", "503", retryable=True)
    assert 20 <= seconds_until(w, r, "a", RETRY) <= 40


def test_retry_delay_is_deterministic() -> None:
    delays = []
    for _ in range(2):
        w = world(RETRYING)
        r = w.start("rt")
        w.fail(r, "a", "503", retryable=True)
        delays.append(seconds_until(w, r, "a", RETRY))
    assert delays[0] == delays[1]


def test_without_jitter_the_delay_doubles_and_is_capped() -> None:
    w = world(
        """
name: rt
steps:
  - id: a
    kind: http
    url: "http://x/a"
    retry: {attempts: 5, backoff: 10s, multiplier: 2, jitter: false, max_backoff: 30s}
"""
    )
    r = w.start("rt")
    seen = []
    for _ in range(4):
        w.fail(r, "a", "503", retryable=True)
        seen.append(seconds_until(w, r, "a", RETRY))
        w.advance(seen[-1])
        w.fire(r, "a", RETRY)
    assert seen == [10, 20, 30, 30]


def test_retry_after_overrides_the_backoff() -> None:
    w = world(RETRYING)
    r = w.start("rt")
    w.fail(r, "a", "429", retryable=True, retry_after=120, status=429)
    assert seconds_until(w, r, "a", RETRY) == 120


def test_non_retryable_error_fails_at_once() -> None:
    w = world(RETRYING)
    r = w.start("rt")
    w.fail(r, "a", "404", status=404)
    assert w.step(r, "a").state is StepState.FAILED
    assert w.snapshots[r].timers == ()
    assert w.run(r).state is RunState.FAILED


def test_attempts_limit_counts_the_first_attempt() -> None:
    w = world(RETRYING)
    r = w.start("rt")
    for attempt in range(1, 5):
        assert w.step(r, "a").attempt == attempt
        w.fail(r, "a", "503", retryable=True)
        if attempt < 4:
            assert w.step(r, "a").state is StepState.RETRYING
            w.advance(3600)
            w.fire(r, "a", RETRY)
    assert w.step(r, "a").state is StepState.FAILED
    assert w.step(r, "a").error["attempts"] == 4
    assert w.run(r).state is RunState.FAILED


@pytest.mark.parametrize(
    ("status", "retryable", "expected"),
    [
        (400, True, StepState.RETRYING),
        (503, False, StepState.FAILED),
        (503, True, StepState.RETRYING),
        (422, False, StepState.FAILED),
    ],
)
def test_the_executors_retryable_flag_decides_not_the_status(
    status: int, retryable: bool, expected: StepState
) -> None:
    w = world(RETRYING)
    r = w.start("rt")
    w.fail(r, "a", str(status), retryable=retryable, status=status)
    assert w.step(r, "a").state is expected


def test_flow_default_retry_policy_applies() -> None:
    w = world(
        """
name: rt
defaults: {retry: {attempts: 1}}
steps: [{id: a, kind: http, url: "http://x/a"}]
"""
    )
    r = w.start("rt")
    w.fail(r, "a", "503", retryable=True)
    assert w.step(r, "a").state is StepState.FAILED


# ---------------------------------------------------------------- fencing and leases


def test_a_stale_attempt_number_changes_nothing() -> None:
    w = world(RETRYING)
    r = w.start("rt")
    w.fail(r, "a", "503", retryable=True)
    w.advance(60)
    w.fire(r, "a", RETRY)
    before = w.snapshots[r]
    t = w.apply(r, StepSucceeded(key="a", attempt=1, owner="w1", output={}))
    assert t.changed is False
    assert w.snapshots[r] is before
    t = w.apply(r, StepErrored(key="a", attempt=1, owner="w1", message="x", retryable=False))
    assert t.changed is False


def test_another_owners_result_changes_nothing() -> None:
    w = world(SEQ)
    r = w.start("seq")
    t = w.apply(r, StepSucceeded(key="a", attempt=1, owner="w2", output={}))
    assert t.changed is False
    assert t.run == w.run(r)
    assert w.step(r, "a").state is StepState.RUNNING


def test_lease_expired_abandons_the_attempt_and_starts_another() -> None:
    w = world(SEQ)
    r = w.start("seq")
    w.advance(31)
    w.worker = "w2"
    t = w.apply(r, LeaseExpired(key="a", attempt=1))
    assert t.changed
    assert executed(t) == [("a", 2)]
    outcomes = {a.number: a.outcome for a in t.attempts}
    assert outcomes == {1: "abandoned", 2: None}
    row = w.step(r, "a")
    assert (row.key, row.state, row.attempt, row.lease_owner) == ("a", StepState.RUNNING, 2, "w2")
    assert row.failures == 0
    # The first worker comes back late: fenced.
    assert w.apply(r, StepSucceeded(key="a", attempt=1, owner="w1", output={})).changed is False
    assert w.succeed(r, "a").changed


def test_lease_expired_while_the_lease_is_valid_changes_nothing() -> None:
    w = world(SEQ)
    r = w.start("seq")
    w.advance(10)
    t = w.apply(r, LeaseExpired(key="a", attempt=1))
    assert t.changed is False
    assert w.step(r, "a").attempt == 1


def test_lease_expired_for_an_old_attempt_changes_nothing() -> None:
    w = world(SEQ)
    r = w.start("seq")
    w.advance(31)
    w.apply(r, LeaseExpired(key="a", attempt=1))
    w.advance(31)
    assert w.apply(r, LeaseExpired(key="a", attempt=1)).changed is False


def test_passive_engine_leaves_attempts_for_a_worker_to_claim() -> None:
    w = world(SEQ, worker=None)
    r = w.start("seq")
    start = w.log[-1][2]
    assert start.executions == ()
    row = w.step(r, "a")
    assert (row.state, row.attempt, row.lease_owner) == (StepState.RUNNING, 1, None)
    # A passive engine does not claim either.
    assert w.apply(r, LeaseExpired(key="a", attempt=1)).changed is False
    w.worker = "w9"
    t = w.apply(r, LeaseExpired(key="a", attempt=1))
    assert executed(t) == [("a", 1)]
    assert all(a.outcome != "abandoned" for a in t.attempts)
    row = w.step(r, "a")
    assert (row.attempt, row.lease_owner) == (1, "w9")
    assert row.lease_until == w.now + timedelta(seconds=30)


# ---------------------------------------------------------------- waits


def test_wait_duration_sets_a_timer_and_firing_it_finishes_the_step() -> None:
    w = world(
        """
name: wt
steps:
  - {id: w, kind: wait, duration: 5m}
  - {id: b, kind: http, url: "http://x/b"}
"""
    )
    r = w.start("wt")
    assert w.step(r, "w").state is StepState.WAITING
    assert w.run(r).state is RunState.WAITING
    assert seconds_until(w, r, "w", WAIT) == 300
    w.advance(300)
    t = w.fire(r, "w", WAIT)
    assert w.step(r, "w").state is StepState.SUCCEEDED
    assert executed(t) == [("b", 1)]
    assert w.run(r).state is RunState.RUNNING


@pytest.mark.parametrize(
    ("until", "seconds"),
    [("2026-01-01T13:00:00+00:00", 3600), ("2020-01-01T00:00:00+00:00", None)],
)
def test_wait_until(until: str, seconds: int | None) -> None:
    w = world(
        """
name: wt
inputs: {at: {type: string}}
steps: [{id: w, kind: wait, until: "{{ inputs.at }}"}]
"""
    )
    r = w.start("wt", {"at": until})
    assert w.step(r, "w").state is StepState.WAITING
    left = seconds_until(w, r, "w", WAIT)
    if seconds is None:
        assert left < 0  # in the past: due at the very next tick
    else:
        assert left == seconds
    w.fire(r, "w", WAIT)
    assert w.run(r).state is RunState.SUCCEEDED


def test_wait_until_without_time_zone_fails() -> None:
    w = world(
        """
name: wt
steps: [{id: w, kind: wait, until: "2026-01-01T13:00:00"}]
"""
    )
    r = w.start("wt")
    assert w.step(r, "w").state is StepState.FAILED
    assert "time zone" in w.step(r, "w").error["message"]
    assert w.snapshots[r].timers == ()


def test_wait_until_not_a_date_fails() -> None:
    w = world(
        """
name: wt
steps: [{id: w, kind: wait, until: "tomorrow"}]
"""
    )
    r = w.start("wt")
    assert w.step(r, "w").state is StepState.FAILED


def test_a_timer_for_a_step_that_moved_on_changes_nothing() -> None:
    w = world(SEQ)
    r = w.start("seq")
    assert w.apply(r, TimerDue(key="a", purpose=RETRY)).changed is False
    assert w.apply(r, TimerDue(key="zz", purpose=WAIT)).changed is False


# ---------------------------------------------------------------- audit and chat


def test_audit_chain_verifies_across_every_transition() -> None:
    w = world(UNDO)
    r = fail_at_d(w)
    for key in ("undo_c1", "undo_c2", "undo_a", "page"):
        w.succeed(r, key)
    w.apply(r, Retry(actor="U0OPS"))
    entries = w.audit(r)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert verify_chain(entries, head=w.run(r).audit_head) is None
    assert w.run(r).audit_seq == len(entries)


def test_tampering_with_an_audit_entry_is_detected() -> None:
    w = world(SEQ)
    r = w.start("seq")
    w.succeed(r, "a")
    entries = w.audit(r)
    entries[1] = dataclasses.replace(entries[1], detail={**entries[1].detail, "step": "zz"})
    problem = verify_chain(entries, head=w.run(r).audit_head)
    assert problem is not None and "altered" in problem
    assert verify_chain(w.audit(r)[:-1], head=w.run(r).audit_head) is not None


def test_run_chat_effect_only_when_states_change() -> None:
    w = world(approval("    required: 2\n    remind_every: 10m"))
    r = w.start("ap")
    assert any(e.kind == "run" for e in w.log[-1][2].chat)
    t = w.vote(r, "ok", "U0A")  # counted, nothing changes state
    assert [e.kind for e in t.chat] == ["approval"]
    w.advance(600)
    t = w.fire(r, "ok", REMIND)
    assert [e.kind for e in t.chat] == ["reminder"]
    t = w.vote(r, "ok", "U0B")
    assert "run" in [e.kind for e in t.chat]


def test_version_increases_by_one_per_changed_transition() -> None:
    w = world(SEQ)
    r = w.start("seq")
    assert w.run(r).version == 1
    w.apply(r, StepSucceeded(key="a", attempt=9, owner="w1", output={}))
    assert w.run(r).version == 1
    w.succeed(r, "a")
    assert w.run(r).version == 2
