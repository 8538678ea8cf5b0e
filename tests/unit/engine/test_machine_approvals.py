"""Behaviour of approval steps through the machine: who may vote, tallies, fields, timeouts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.engine.events import Cancel, Retry
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from tests.unit.engine.harness import executed, seconds_until, world
from tests.unit.engine.samples import approval

REJECTED = Decision.REJECTED
TIMEOUT = TimerPurpose.APPROVAL_TIMEOUT
REMIND = TimerPurpose.REMINDER


# ---------------------------------------------------------------- who may vote


def test_n_of_m_approval() -> None:
    w = world(approval("    required: 2"))
    r = w.start("ap")
    assert w.run(r).state is RunState.WAITING
    t = w.vote(r, "ok", "U0A")
    assert t.changed and "more approvals" in (t.reply or "")
    assert w.step(r, "ok").state is StepState.WAITING
    t = w.vote(r, "ok", "U0B")
    assert w.step(r, "ok").state is StepState.SUCCEEDED
    assert w.step(r, "ok").output["decided_by"] == ["U0A", "U0B"]
    assert w.snapshots[r].approvals["ok"].state == "approved"
    assert executed(t) == [("after", 1)]


def test_requester_is_refused_unless_allowed() -> None:
    w = world(approval(approvers="{users: [U0REQ, U0A]}"))
    r = w.start("ap", by="U0REQ")
    t = w.vote(r, "ok", "U0REQ")
    assert t.changed is False
    assert "someone else" in (t.reply or "")
    w2 = world(approval("    allow_requester: true", approvers="{users: [U0REQ, U0A]}"))
    r2 = w2.start("ap", by="U0REQ")
    assert w2.vote(r2, "ok", "U0REQ").changed
    assert w2.step(r2, "ok").state is StepState.SUCCEEDED


def test_non_approver_is_refused() -> None:
    w = world(approval())
    r = w.start("ap")
    t = w.vote(r, "ok", "U0ZZZ")
    assert t.changed is False
    assert "not one of the approvers" in (t.reply or "")


def test_group_member_may_approve() -> None:
    w = world(approval(approvers="{groups: [S0OPS]}"))
    r = w.start("ap")
    assert w.vote(r, "ok", "U0ZZZ").changed is False
    assert w.vote(r, "ok", "U0ZZZ", groups=frozenset({"S0OPS"})).changed
    assert w.step(r, "ok").state is StepState.SUCCEEDED


def test_duplicate_vote_is_refused() -> None:
    w = world(approval("    required: 2"))
    r = w.start("ap")
    w.vote(r, "ok", "U0A")
    t = w.vote(r, "ok", "U0A")
    assert t.changed is False
    assert "already answered" in (t.reply or "")
    assert w.step(r, "ok").state is StepState.WAITING


def test_vote_after_the_decision_is_refused_with_who_decided() -> None:
    w = world(approval())
    r = w.start("ap")
    w.vote(r, "ok", "U0A")
    t = w.vote(r, "ok", "U0B", REJECTED, reason="no")
    assert t.changed is False
    assert "already approved" in (t.reply or "")
    assert "U0A" in (t.reply or "")


def test_vote_on_a_cancelled_run_is_refused() -> None:
    w = world(approval())
    r = w.start("ap")
    w.apply(r, Cancel(actor="U0OPS"))
    assert w.run(r).state is RunState.CANCELLED
    t = w.vote(r, "ok", "U0A")
    assert t.changed is False
    assert w.snapshots[r].approvals["ok"].state == "cancelled"


def test_reject_needs_a_reason_by_default() -> None:
    w = world(approval())
    r = w.start("ap")
    t = w.vote(r, "ok", "U0A", REJECTED)
    assert t.changed is False
    assert "reason is required to reject" in (t.reply or "")
    assert w.vote(r, "ok", "U0A", REJECTED, reason="   ").changed is False
    t = w.vote(r, "ok", "U0A", REJECTED, reason="too risky")
    assert t.changed
    row = w.step(r, "ok")
    assert row.state is StepState.REJECTED
    assert "too risky" in row.error["message"]
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).error["reason"] == "rejected"


def test_one_rejection_decides_even_with_approvals_counted() -> None:
    w = world(approval("    required: 2"))
    r = w.start("ap")
    w.vote(r, "ok", "U0A")
    w.vote(r, "ok", "U0B", REJECTED, reason="no")
    assert w.step(r, "ok").state is StepState.REJECTED
    assert w.snapshots[r].approvals["ok"].decided_by == ("U0B",)


def test_require_reason_always_applies_to_approve_too() -> None:
    w = world(approval("    require_reason: always"))
    r = w.start("ap")
    t = w.vote(r, "ok", "U0A")
    assert t.changed is False
    assert "reason is required to approve" in (t.reply or "")
    assert w.vote(r, "ok", "U0A", reason="checked").changed
    assert w.step(r, "ok").output["reason"] == "checked"


def test_require_reason_never() -> None:
    w = world(approval("    require_reason: never"))
    r = w.start("ap")
    assert w.vote(r, "ok", "U0A", REJECTED).changed


# ---------------------------------------------------------------- four eyes and quorums


FOUR_EYES = """
name: fe
steps:
  - {id: first, kind: approval, question: "1?", approvers: {users: [U0A, U0B]}}
  - id: second
    kind: approval
    question: "2?"
    approvers: {users: [U0A, U0B]}
    exclude_approvers_of: [first]
"""


def test_four_eyes_across_steps() -> None:
    w = world(FOUR_EYES)
    r = w.start("fe")
    w.vote(r, "first", "U0A")
    t = w.vote(r, "second", "U0A")
    assert t.changed is False
    assert "you approved `first`" in (t.reply or "")
    assert w.vote(r, "second", "U0B").changed
    assert w.run(r).state is RunState.SUCCEEDED


def test_four_eyes_looks_at_who_approved_the_current_request() -> None:
    w = world(
        """
name: fe
steps:
  - id: first
    kind: approval
    question: "1?"
    approvers: {users: [U0A, U0B]}
    compensate: [{id: undo, kind: notify, text: "undone"}]
  - {id: c, kind: http, url: "http://x/c"}
  - id: second
    kind: approval
    question: "2?"
    approvers: {users: [U0A, U0B]}
    exclude_approvers_of: [first]
"""
    )
    r = w.start("fe")
    w.vote(r, "first", "U0A")
    w.fail(r, "c")
    w.succeed(r, "undo")
    w.apply(r, Retry(actor="U0OPS"))
    assert w.vote(r, "first", "U0B").changed
    w.succeed(r, "c")
    # U0A approved `first` only in the earlier request: the four eyes now are B then A.
    assert w.vote(r, "second", "U0B").changed is False
    t = w.vote(r, "second", "U0A")
    assert t.changed, t.reply
    assert w.run(r).state is RunState.SUCCEEDED


QUORUM = """
name: q
steps:
  - id: ok
    kind: approval
    question: "go?"
    quorum:
      - {group: S0LEGAL}
      - {group: S0FIN}
"""


def test_one_person_in_both_groups_cannot_meet_both_quorums() -> None:
    w = world(QUORUM)
    r = w.start("q")
    both = frozenset({"S0LEGAL", "S0FIN"})
    t = w.vote(r, "ok", "U0X", groups=both)
    assert t.changed
    assert w.step(r, "ok").state is StepState.WAITING
    assert w.vote(r, "ok", "U0X", groups=both).changed is False
    w.vote(r, "ok", "U0Y", groups=frozenset({"S0LEGAL"}))
    assert w.step(r, "ok").state is StepState.SUCCEEDED


def test_votes_record_only_the_groups_that_matter() -> None:
    w = world(QUORUM)
    r = w.start("q")
    t = w.vote(r, "ok", "U0X", groups=frozenset({"S0LEGAL", "S0OTHER"}))
    assert t.votes[0].groups == ("S0LEGAL",)


# ---------------------------------------------------------------- fields


FIELDS = approval(
    """    fields:
      - {id: ticket, label: Ticket}
      - {id: count, label: Count, type: integer}
      - {id: note, label: Note, required: false}"""
)


def test_approval_fields_are_required_typed_and_become_the_output() -> None:
    w = world(FIELDS)
    r = w.start("ap")
    t = w.vote(r, "ok", "U0A", fields={"count": "3"})
    assert t.changed is False
    assert "`Ticket` is required" in (t.reply or "")
    t = w.vote(r, "ok", "U0A", fields={"ticket": "T-1", "count": "three"})
    assert "must be an integer" in (t.reply or "")
    t = w.vote(r, "ok", "U0A", fields={"ticket": "T-1", "count": "3", "bogus": 1})
    assert "unknown field" in (t.reply or "")
    assert w.vote(r, "ok", "U0A", fields={"ticket": "T-1", "count": "3"}).changed
    assert w.step(r, "ok").output["fields"] == {"ticket": "T-1", "count": 3}


def test_reject_needs_no_fields() -> None:
    w = world(FIELDS)
    r = w.start("ap")
    assert w.vote(r, "ok", "U0A", REJECTED, reason="no").changed


@pytest.mark.parametrize(
    ("on_timeout", "state"), [("reject", StepState.REJECTED), ("approve", StepState.SUCCEEDED)]
)
def test_approval_timeout(on_timeout: str, state: StepState) -> None:
    w = world(approval(f"    timeout: 1h\n    on_timeout: {on_timeout}"))
    r = w.start("ap")
    assert seconds_until(w, r, "ok", TIMEOUT) == 3600
    w.advance(3600)
    w.fire(r, "ok", TIMEOUT)
    assert w.step(r, "ok").state is state
    assert w.snapshots[r].approvals["ok"].how == "timeout"
    assert w.step(r, "ok").output["how"] == "timeout"


# ---------------------------------------------------------------- timeouts, escalation, reminders


ESCALATE = approval(
    """    timeout: 1h
    on_timeout: escalate
    remind_every: 20m
    escalate:
      approvers: {users: [U0BOSS]}
      timeout: 2h
      remind_every: 30m
      on_timeout: reject""",
    approvers="{users: [U0A]}",
)


def test_escalation_advances_the_level_with_a_new_deadline_and_reminders() -> None:
    w = world(ESCALATE)
    r = w.start("ap")
    assert seconds_until(w, r, "ok", REMIND) == 20 * 60
    w.advance(3600)
    t = w.fire(r, "ok", TIMEOUT)
    approval_ = w.snapshots[r].approvals["ok"]
    assert approval_.level == 1
    assert approval_.state == "pending"
    assert approval_.deadline == w.now + timedelta(hours=2)
    assert seconds_until(w, r, "ok", TIMEOUT) == 2 * 3600
    assert seconds_until(w, r, "ok", REMIND) == 30 * 60
    assert any(e.kind == "approval" and e.payload.get("escalated") for e in t.chat)
    # The first level's approver no longer decides; the boss does.
    assert w.vote(r, "ok", "U0A").changed is False
    assert w.vote(r, "ok", "U0BOSS").changed
    assert w.step(r, "ok").state is StepState.SUCCEEDED
    assert w.timer(r, "ok", TIMEOUT) is None
    assert w.timer(r, "ok", REMIND) is None


def test_last_level_timeout_applies_its_own_policy() -> None:
    w = world(ESCALATE)
    r = w.start("ap")
    w.advance(3600)
    w.fire(r, "ok", TIMEOUT)
    w.advance(7200)
    w.fire(r, "ok", TIMEOUT)
    assert w.step(r, "ok").state is StepState.REJECTED
    assert w.run(r).state is RunState.FAILED


def test_reminders_repeat_until_the_deadline() -> None:
    w = world(approval("    timeout: 1h\n    remind_every: 25m"))
    r = w.start("ap")
    reminders = 0
    while w.timer(r, "ok", REMIND) is not None:
        w.advance(seconds_until(w, r, "ok", REMIND))
        t = w.fire(r, "ok", REMIND)
        assert [e.kind for e in t.chat] == ["reminder"]
        reminders += 1
    assert reminders == 2  # at 25m and 50m; 75m would be past the deadline
    assert w.timer(r, "ok", TIMEOUT) is not None


# ---------------------------------------------------------------- asking again after a retry


def test_retry_asks_a_rejected_cleanup_approval_again() -> None:
    w = world(
        """
name: cl
steps:
  - {id: a, kind: http, url: "http://x/a"}
on_failure:
  - {id: ask, kind: approval, question: "roll back?", approvers: {users: [U0A]}}
"""
    )
    r = w.start("cl")
    w.fail(r, "a")
    w.vote(r, "ask", "U0A", REJECTED, reason="no")
    assert w.run(r).state is RunState.FAILED
    assert w.run(r).error["cleanup_failed"] == ["ask"]
    t = w.apply(r, Retry(actor="U0OPS"))
    assert t.changed
    assert w.step(r, "ask").state is StepState.PENDING
    w.fail(r, "a")
    assert w.step(r, "ask").state is StepState.WAITING
    assert w.snapshots[r].approvals["ask"].state == "pending"
    assert w.vote(r, "ask", "U0A").changed
    assert w.run(r).state is RunState.FAILED
    assert "cleanup_failed" not in w.run(r).error


def test_retry_asks_approvers_afresh() -> None:
    # An approval undone by compensation is asked again after a retry: the votes
    # of the first request neither pre-count nor block their authors.
    w = world(
        """
name: again
steps:
  - id: ok
    kind: approval
    question: "?"
    approvers: {users: [U0A]}
    compensate: [{id: undo, kind: notify, text: "undone"}]
  - {id: b, kind: http, url: "http://x/b"}
"""
    )
    r = w.start("again")
    w.vote(r, "ok", "U0A")
    w.fail(r, "b")
    w.succeed(r, "undo")
    assert w.step(r, "ok").state is StepState.COMPENSATED
    w.apply(r, Retry(actor="U0OPS"))
    assert w.step(r, "ok").state is StepState.WAITING
    assert w.snapshots[r].approvals["ok"].round == 1
    t = w.vote(r, "ok", "U0A")
    assert t.changed, t.reply
    assert [vote.round for vote in t.votes] == [1]
    assert w.step(r, "ok").state is StepState.SUCCEEDED


def test_retry_does_not_count_votes_of_the_first_request() -> None:
    w = world(
        """
name: again
steps:
  - id: p
    kind: parallel
    branches:
      one: [{id: b, kind: http, url: "http://x/b"}]
      two: [{id: ok, kind: approval, question: "?", approvers: {users: [U0A, U0B]}, required: 2}]
"""
    )
    r = w.start("again")
    w.vote(r, "ok", "U0A", fields={})
    w.fail(r, "b")
    w.apply(r, Retry(actor="U0OPS"))
    assert w.vote(r, "ok", "U0B").changed
    assert w.step(r, "ok").state is StepState.WAITING  # U0A's old vote does not count
    assert w.vote(r, "ok", "U0A").changed
    assert w.step(r, "ok").state is StepState.SUCCEEDED
    assert w.step(r, "ok").output["decided_by"] == ["U0B", "U0A"]
