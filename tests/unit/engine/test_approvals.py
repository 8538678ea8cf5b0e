"""The approval policy as pure functions: eligibility, refusals, tallies, progress, fields."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.definitions.models import ApprovalLevel, ApprovalStep
from bot.engine.approvals import (
    coerce_fields,
    counted,
    current,
    field_problem,
    may_decide,
    progress,
    refusal,
    relevant_groups,
    tally,
)
from bot.engine.records import Approval, Vote
from bot.engine.states import Decision
from tests.unit.engine.harness import T0

APPROVED = Decision.APPROVED
REJECTED = Decision.REJECTED


def level(**spec: Any) -> ApprovalLevel:
    return ApprovalLevel.model_validate(spec)


def step(**spec: Any) -> ApprovalStep:
    base: dict[str, Any] = {"id": "ok", "kind": "approval", "question": "go?"}
    base.setdefault("approvers", {"users": ["U0A", "U0B"]})
    base.update(spec)
    if "quorum" in spec:
        base.pop("approvers")
    return ApprovalStep.model_validate(base)


def vote(
    voter: str,
    decision: Decision = APPROVED,
    *,
    groups: tuple[str, ...] = (),
    level_: int = 0,
    at: timedelta = timedelta(0),
    key: str = "ok",
    fields: dict[str, Any] | None = None,
) -> Vote:
    return Vote(
        run_id="r",
        step_key=key,
        voter=voter,
        decision=decision,
        level=level_,
        at=T0 + at,
        groups=groups,
        fields=fields or {},
    )


LEGAL_AND_FINANCE = level(quorum=[{"group": "S0LEGAL"}, {"group": "S0FIN"}])


# ---------------------------------------------------------------- who may decide


def test_may_decide_by_user_or_group() -> None:
    lvl = level(approvers={"users": ["U0A"], "groups": ["S0OPS"]})
    assert may_decide(lvl, "U0A", ())
    assert may_decide(lvl, "U0Z", ("S0OPS",))
    assert not may_decide(lvl, "U0Z", ("S0OTHER",))


def test_may_decide_with_quorums() -> None:
    lvl = level(quorum=[{"group": "S0LEGAL"}, {"users": ["U0CFO"]}])
    assert may_decide(lvl, "U0X", ("S0LEGAL",))
    assert may_decide(lvl, "U0CFO", ())
    assert not may_decide(lvl, "U0X", ("S0FIN",))


def test_relevant_groups() -> None:
    assert relevant_groups(LEGAL_AND_FINANCE) == {"S0LEGAL", "S0FIN"}
    assert relevant_groups(level(approvers={"users": ["U0A"], "groups": ["S0OPS"]})) == {"S0OPS"}
    assert relevant_groups(level(quorum=[{"users": ["U0A"]}])) == frozenset()


# ---------------------------------------------------------------- refusals


def refuse(s: ApprovalStep, voter: str = "U0A", **overrides: Any) -> str | None:
    args: dict[str, Any] = {
        "step": s,
        "level": s.levels()[0],
        "voter": voter,
        "groups": (),
        "decision": APPROVED,
        "reason": None,
        "fields": {},
        "requester": "U0REQ",
        "votes_here": [],
        "approvers_elsewhere": {},
    }
    args.update(overrides)
    return refusal(**args)


def test_an_eligible_vote_is_not_refused() -> None:
    assert refuse(step()) is None


def test_non_approver_is_refused_first() -> None:
    assert "not one of the approvers" in (refuse(step(), "U0REQ") or "")


def test_requester_is_refused_unless_allowed() -> None:
    s = step(approvers={"users": ["U0REQ"]})
    assert "someone else" in (refuse(s, "U0REQ") or "")
    assert refuse(step(approvers={"users": ["U0REQ"]}, allow_requester=True), "U0REQ") is None


def test_second_vote_at_the_same_level_is_refused() -> None:
    why = refuse(step(), votes_here=[vote("U0A", REJECTED)])
    assert why == "you have already answered this approval"


def test_approver_of_an_excluded_step_is_refused() -> None:
    why = refuse(step(), approvers_elsewhere={"first": {"U0A"}, "other": set()})
    assert why == "you approved `first`, so a different person must approve this step"
    assert refuse(step(), "U0B", approvers_elsewhere={"first": {"U0A"}}) is None


@pytest.mark.parametrize(
    ("require", "decision", "reason", "refused"),
    [
        ("reject", REJECTED, None, True),
        ("reject", REJECTED, " \n", True),
        ("reject", REJECTED, "risky", False),
        ("reject", APPROVED, None, False),
        ("always", APPROVED, None, True),
        ("always", APPROVED, "ok", False),
        ("always", REJECTED, "", True),
        ("never", REJECTED, None, False),
    ],
)
def test_reasons(require: str, decision: Decision, reason: str | None, refused: bool) -> None:
    why = refuse(step(require_reason=require), decision=decision, reason=reason)
    assert (why is not None) is refused
    if refused:
        word = "reject" if decision is REJECTED else "approve"
        assert why == f"a reason is required to {word}"


def test_fields_are_checked_on_approve_only() -> None:
    s = step(fields=[{"id": "ticket", "label": "Ticket"}])
    assert refuse(s) == "`Ticket` is required"
    assert refuse(s, decision=REJECTED, reason="no") is None


# ---------------------------------------------------------------- tally


def test_no_votes_decide_nothing() -> None:
    assert tally(level(approvers={"users": ["U0A"]}), []) is None


def test_n_of_m_counts_distinct_approvers() -> None:
    lvl = level(approvers={"users": ["U0A", "U0B", "U0C"]}, required=2)
    assert tally(lvl, [vote("U0A")]) is None
    assert tally(lvl, [vote("U0A"), vote("U0A")]) is None
    assert tally(lvl, [vote("U0A"), vote("U0C")]) is APPROVED


def test_any_rejection_decides_at_once() -> None:
    lvl = level(approvers={"users": ["U0A", "U0B"]}, required=2)
    assert tally(lvl, [vote("U0A"), vote("U0B", REJECTED)]) is REJECTED
    assert tally(LEGAL_AND_FINANCE, [vote("U0X", REJECTED, groups=("S0LEGAL",))]) is REJECTED


def test_quorum_needs_every_group() -> None:
    legal = vote("U0L", groups=("S0LEGAL",))
    fin = vote("U0F", groups=("S0FIN",))
    assert tally(LEGAL_AND_FINANCE, [legal]) is None
    assert tally(LEGAL_AND_FINANCE, [legal, vote("U0L2", groups=("S0LEGAL",))]) is None
    assert tally(LEGAL_AND_FINANCE, [legal, fin]) is APPROVED


def test_one_person_in_both_groups_fills_only_one_quorum() -> None:
    both = vote("U0X", groups=("S0LEGAL", "S0FIN"))
    assert tally(LEGAL_AND_FINANCE, [both]) is None
    assert tally(LEGAL_AND_FINANCE, [both, both]) is None


def test_quorum_assignment_backtracks() -> None:
    # Greedy would give U0X to legal first and leave finance empty: U0X must take finance.
    both = vote("U0X", groups=("S0LEGAL", "S0FIN"))
    legal = vote("U0L", groups=("S0LEGAL",))
    assert tally(LEGAL_AND_FINANCE, [both, legal]) is APPROVED
    assert tally(LEGAL_AND_FINANCE, [legal, both]) is APPROVED


def test_quorum_with_counts_and_users() -> None:
    lvl = level(
        quorum=[{"group": "S0LEGAL", "required": 2}, {"users": ["U0CFO", "U0CEO"], "label": "C"}]
    )
    a = vote("U0A", groups=("S0LEGAL",))
    b = vote("U0B", groups=("S0LEGAL",))
    cfo = vote("U0CFO", groups=("S0LEGAL",))
    assert tally(lvl, [a, cfo]) is None  # the CFO cannot be both a lawyer and the C-level
    assert tally(lvl, [a, b]) is None
    assert tally(lvl, [a, b, cfo]) is APPROVED
    assert len(progress(lvl, [a, cfo]).missing) == 1
    # The CFO counts as the second lawyer once the CEO fills the C-level quorum.
    assert tally(lvl, [a, cfo, vote("U0CEO")]) is APPROVED


def test_quorum_ignores_voters_matching_none() -> None:
    stranger = vote("U0Z", groups=("S0OTHER",))
    assert tally(LEGAL_AND_FINANCE, [stranger, stranger]) is None


# ---------------------------------------------------------------- progress


def test_progress_n_of_m() -> None:
    lvl = level(approvers={"users": ["U0A", "U0B", "U0C"]}, required=2)
    p = progress(lvl, [vote("U0A"), vote("U0A"), vote("U0B", REJECTED)])
    assert p.approved_by == ("U0A",)
    assert p.required == 2
    assert p.missing == ("1 more",)
    assert progress(lvl, [vote("U0A"), vote("U0C")]).missing == ()


def test_progress_quorum_texts() -> None:
    lvl = level(
        quorum=[
            {"group": "S0LEGAL", "required": 2},
            {"group": "S0FIN", "label": "@finance"},
            {"users": ["U0CFO", "U0CEO"]},
        ]
    )
    p = progress(lvl, [vote("U0L", groups=("S0LEGAL",))])
    assert p.approved_by == ("U0L",)
    assert p.required == 4
    assert p.missing == ("1 from S0LEGAL", "1 from @finance", "1 from U0CFO, U0CEO")


def test_progress_agrees_with_the_tally_for_a_person_in_both_groups() -> None:
    both = vote("U0X", groups=("S0LEGAL", "S0FIN"))
    assert progress(LEGAL_AND_FINANCE, [both]).missing == ("1 from S0FIN",)
    assert progress(LEGAL_AND_FINANCE, [both, both]).missing == ("1 from S0FIN",)
    legal = vote("U0L", groups=("S0LEGAL",))
    assert progress(LEGAL_AND_FINANCE, [both, legal]).missing == ()


def test_progress_of_nothing() -> None:
    p = progress(LEGAL_AND_FINANCE, [])
    assert p.approved_by == ()
    assert p.missing == ("1 from S0LEGAL", "1 from S0FIN")


# ---------------------------------------------------------------- requests and levels


def test_votes_of_an_earlier_request_or_level_do_not_count() -> None:
    approval = Approval(run_id="r", step_key="ok", level=1, requested_at=T0 + timedelta(hours=1))
    old = vote("U0A", at=timedelta(minutes=5))
    level0 = vote("U0B", at=timedelta(hours=2), level_=0)
    here = vote("U0C", at=timedelta(hours=2), level_=1)
    elsewhere = vote("U0D", at=timedelta(hours=2), level_=1, key="other")
    votes = [old, level0, here, elsewhere]
    assert current(approval, votes) == [level0, here]
    assert counted(approval, votes) == [here]
    at_request = vote("U0E", at=timedelta(hours=1), level_=1)
    assert counted(approval, [at_request]) == [at_request]


# ---------------------------------------------------------------- fields

FIELDS = step(
    fields=[
        {"id": "ticket", "label": "Ticket"},
        {"id": "count", "label": "Count", "type": "integer"},
        {"id": "ratio", "label": "Ratio", "type": "number", "required": False},
        {"id": "note", "label": "Note", "type": "text", "required": False},
    ]
)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"ticket": "T-1", "count": "3"}, None),
        ({"ticket": "T-1", "count": 3, "ratio": "0.5", "note": "x"}, None),
        ({"ticket": "T-1", "count": " 7 ", "ratio": 2}, None),
        ({"count": "3"}, "`Ticket` is required"),
        ({"ticket": "   ", "count": "3"}, "`Ticket` is required"),
        ({"ticket": "T-1"}, "`Count` is required"),
        ({"ticket": "T-1", "count": ""}, "`Count` is required"),
        ({"ticket": "T-1", "count": "three"}, "`Count` must be an integer"),
        ({"ticket": "T-1", "count": "3.5"}, "`Count` must be an integer"),
        ({"ticket": "T-1", "count": "3", "ratio": "half"}, "`Ratio` must be a number"),
        ({"ticket": "T-1", "count": "3", "ratio": "nan"}, "`Ratio` must be a number"),
        ({"ticket": "T-1", "count": "3", "ratio": "inf"}, "`Ratio` must be a number"),
        ({"ticket": "T-1", "count": "3", "ratio": "1e999"}, "`Ratio` must be a number"),
        ({"ticket": "T-1", "count": "3", "ratio": [1]}, "`Ratio` must be a number"),
        ({"ticket": "T-1", "count": {"n": 1}}, "`Count` must be an integer"),
        ({"ticket": "T-1", "count": "3", "extra": "x"}, "unknown field 'extra'"),
    ],
)
def test_field_problem(fields: dict[str, Any], problem: str | None) -> None:
    assert field_problem(FIELDS, fields) == problem


def test_coerce_fields_types_the_values_and_drops_empty_ones() -> None:
    typed = coerce_fields(FIELDS, {"ticket": 12, "count": " 7 ", "ratio": "0.25", "note": ""})
    assert typed == {"ticket": "12", "count": 7, "ratio": 0.25}
    assert isinstance(typed["count"], int)
    assert coerce_fields(FIELDS, {}) == {}


def test_a_step_without_fields_accepts_none() -> None:
    assert field_problem(step(), {}) is None
    assert field_problem(step(), {"x": 1}) == "unknown field 'x'"


# ---------------------------------------------------------------- quorum against brute force

GROUPS = ["S0G1", "S0G2", "S0G3"]


def brute_force(quorum: list[dict[str, Any]], voters: list[tuple[str, tuple[str, ...]]]) -> bool:
    """Try every way of seating each voter in one quorum (or none)."""
    distinct = list(dict(voters).items())
    for seats in itertools.product(range(len(quorum) + 1), repeat=len(distinct)):
        got = [0] * len(quorum)
        fits = True
        for (_, groups), seat in zip(distinct, seats, strict=True):
            if seat == len(quorum):
                continue
            if quorum[seat]["group"] not in groups:
                fits = False
                break
            got[seat] += 1
        if fits and all(g >= q["required"] for g, q in zip(got, quorum, strict=True)):
            return True
    return False


@given(
    quorum=st.lists(
        st.fixed_dictionaries({"group": st.sampled_from(GROUPS), "required": st.integers(1, 2)}),
        min_size=1,
        max_size=3,
    ),
    voters=st.lists(
        st.tuples(
            st.sampled_from(["U0A", "U0B", "U0C", "U0D", "U0E"]),
            st.lists(st.sampled_from(GROUPS), max_size=3, unique=True).map(tuple),
        ),
        max_size=6,
    ),
)
@settings(max_examples=150, deadline=None)
def test_quorum_tally_matches_brute_force(
    quorum: list[dict[str, Any]], voters: list[tuple[str, tuple[str, ...]]]
) -> None:
    lvl = level(quorum=quorum)
    votes = [vote(voter, groups=groups) for voter, groups in voters]
    expected = brute_force(quorum, [(v, g) for v, g in reversed(voters)])
    assert (tally(lvl, votes) is APPROVED) is expected
    assert (progress(lvl, votes).missing == ()) is expected
