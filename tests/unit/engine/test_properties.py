"""Random flows under random events: invariants of the machine that no sequence may break.

Each example builds a small flow (a sequence, an optional parallel and for_each,
an optional sub-flow, compensations, ``on_failure``, retries, approvals, waits),
starts it in the in-memory World, and applies events drawn from what can happen
*now* to any of its runs: results of running attempts (current and stale),
lease expiries, due timers, votes by approvers, non-approvers and the
requester, operator commands through passive engines or workers, and the clock
moving. Every transition, including those emitted to child or parent runs, is
checked as it is written, and every run is checked after every event.

``RELAY_HYPOTHESIS_EXAMPLES`` raises the number of examples for a deeper search.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.definitions.models import ApprovalStep
from bot.engine.approvals import counted
from bot.engine.audit import verify_chain
from bot.engine.events import (
    Cancel,
    CastVote,
    ChildFinished,
    Event,
    LeaseExpired,
    Retry,
    Skip,
    StepErrored,
    StepSucceeded,
    Transition,
)
from bot.engine.machine import ABANDON_LIMIT
from bot.engine.move import flow_of
from bot.engine.records import Snapshot
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from tests.unit.engine.harness import World, definition

APPROVERS = ["U0A", "U0B", "U0C"]
REQUESTER = "U0REQ"
VOTERS = [*APPROVERS, REQUESTER, "U0ZZZ"]
ACTIVE = (StepState.RUNNING, StepState.RETRYING, StepState.WAITING)
RETRYING = StepState.RETRYING
WORKER = "w1"
SETTINGS = settings(
    max_examples=int(os.environ.get("RELAY_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    # Flows and event lists are drawn step by step; a slow or large draw is expected.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- flows


class Ids:
    """Unique step ids within one generated flow."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"s{self.count}"


@st.composite
def retry_policy(draw: st.DrawFn) -> dict[str, Any]:
    return {"attempts": draw(st.integers(1, 3)), "backoff": "1s", "jitter": draw(st.booleans())}


@st.composite
def approvers(draw: st.DrawFn) -> dict[str, Any]:
    users = draw(st.lists(st.sampled_from(APPROVERS), min_size=1, max_size=3, unique=True))
    return {"approvers": {"users": users}, "required": draw(st.integers(1, len(users)))}


@st.composite
def approval(draw: st.DrawFn) -> dict[str, Any]:
    step = {
        "question": "ok?",
        **draw(approvers()),
        "allow_requester": draw(st.booleans()),
        "require_reason": draw(st.sampled_from(["reject", "always", "never"])),
    }
    timeout = draw(st.sampled_from([None, "reject", "approve", "escalate"]))
    if timeout is not None:
        step.update(timeout=f"{draw(st.integers(60, 600))}s", on_timeout=timeout)
        if draw(st.booleans()):
            step["remind_every"] = "50s"
    if timeout == "escalate":
        step["escalate"] = {
            **draw(approvers()),
            "timeout": "300s",
            "on_timeout": draw(st.sampled_from(["reject", "approve"])),
            "remind_every": "100s",
        }
    return step


@st.composite
def leaf(
    draw: st.DrawFn,
    ids: Ids,
    kinds: tuple[str, ...],
    *,
    undo: bool = True,
    hazards: bool = False,
) -> Any:
    """One step. ``hazards`` adds conditions, including ones that fail to evaluate."""
    kind = draw(st.sampled_from(kinds))
    step: dict[str, Any] = {"id": ids(), "kind": kind}
    if hazards and draw(st.integers(0, 4)) == 0:
        step["when"] = draw(st.sampled_from(["true", "false", "nope.missing > 1"]))
    if kind == "http":
        step.update(url="http://x/a", retry=draw(retry_policy()))
    elif kind == "notify":
        step.update(text="hi", retry=draw(retry_policy()))
    elif kind == "flow":
        step.update(flow="child", retry=draw(retry_policy()))
    elif kind == "wait":
        step["duration"] = f"{draw(st.integers(1, 120))}s"
    else:
        step.update(draw(approval()))
    if draw(st.integers(0, 3)) == 0:
        step["continue_on_error"] = True
    if undo and kind != "wait" and draw(st.booleans()):
        step["compensate"] = [draw(leaf(ids, ("http", "notify"), undo=False))]
    return step


@st.composite
def flows(
    draw: st.DrawFn, *, name: str = "prop", sub: bool = False, hazards: bool = False
) -> dict[str, Any]:
    """A flow. ``hazards``: failing conditions and four-eyes rules, which may leave a
    run stuck by design, so only the invariants test uses them, never the liveness one."""
    ids = Ids()
    kinds = ("http", "wait", "approval", "notify")
    steps = [draw(leaf(ids, kinds, hazards=hazards)) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        branches = {
            branch: [
                draw(leaf(ids, kinds, hazards=hazards)) for _ in range(draw(st.integers(1, 2)))
            ]
            for branch in ("one", "two")
        }
        at = draw(st.integers(0, len(steps)))
        steps.insert(at, {"id": ids(), "kind": "parallel", "branches": branches})
    if draw(st.booleans()):
        fan = draw(leaf(ids, ("http", "notify", "flow") if sub else ("http", "notify")))
        fan["for_each"] = {
            "items": draw(st.lists(st.integers(0, 9), max_size=3)),
            "concurrency": draw(st.integers(1, 2)),
        }
        steps.insert(draw(st.integers(0, len(steps))), fan)
    if sub and draw(st.booleans()):
        steps.insert(draw(st.integers(0, len(steps))), draw(leaf(ids, ("flow",))))
    if hazards:
        approvals = [step for step in steps if step["kind"] == "approval"]
        for first, later in itertools.pairwise(approvals):
            if draw(st.booleans()):
                later["exclude_approvers_of"] = [first["id"]]
    flow: dict[str, Any] = {"name": name, "steps": steps}
    if draw(st.booleans()):
        flow["on_failure"] = [draw(leaf(ids, kinds, undo=False, hazards=hazards))]
    if hazards and draw(st.integers(0, 3)) == 0:
        # Outputs read every step; one that is not there fails the run at its end.
        flow["outputs"] = {
            "first": f"{{{{ steps.{steps[0]['id']}.state }}}}",
            "broken": draw(st.sampled_from(["{{ run.id }}", "{{ run.nope }}"])),
        }
    return flow


@st.composite
def families(draw: st.DrawFn, *, hazards: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A parent flow (which may call ``child``) and the child flow."""
    parent = draw(flows(sub=True, hazards=hazards))
    return parent, draw(flows(name="child", hazards=hazards))


# ---------------------------------------------------------------- the checked world


class Checked(World):
    """A World that checks every transition as it is written, and every run after every event."""

    def __init__(self, parent: dict[str, Any], child: dict[str, Any], *, passive: bool) -> None:
        super().__init__(definition(parent), definition(child), worker=None if passive else WORKER)
        self.passive = passive
        """Whether the event being applied is decided by a passive engine (a CLI command)."""
        self.unowned: set[tuple[str, str, int]] = set()
        """Attempts a passive engine left unowned: only those may run without an owner."""
        self.decided: dict[tuple[str, str], str] = {}
        """(run, approval step) -> its decision, until an operator's reset asks again."""
        self.events = 0
        self.root = self.start("prop", by=REQUESTER)
        self.worker, self.passive = WORKER, False
        self.check_all()

    # ------------------------------------------------------------ driving

    def event(self, run_id: str, event: Event, *, passive: bool = False) -> Transition:
        self.worker, self.passive = (None, True) if passive else (WORKER, False)
        try:
            t = self.apply(run_id, event)
        finally:
            self.worker, self.passive = WORKER, False
        self.events += 1
        self.check_all()
        return t

    def fire_timer(self, run_id: str, key: str, purpose: TimerPurpose) -> Transition:
        t = self.fire(run_id, key, purpose)
        self.events += 1
        self.check_all()
        return t

    # ------------------------------------------------------------ per transition

    def apply(self, run_id: str, event: Event) -> Transition:
        before = self.snapshots[run_id]
        t = super().apply(run_id, event)
        if not t.changed:
            assert t.run == before.run
            assert not (t.steps or t.executions or t.aborts or t.emits or t.audit)
        return t

    def _write(self, before: Snapshot, t: Transition) -> None:
        super()._write(before, t)  # asserts version + 1
        run_id = before.run.id
        event = self.log[-1][1]
        snap = self.snapshots[run_id]
        for row in snap.steps.values():
            assert isinstance(row.state, StepState), row
        for execution in t.executions:
            row = snap.steps[execution.key]
            assert execution.run_id == run_id
            assert row.state is StepState.RUNNING, (execution, row)
            assert row.attempt == execution.attempt, (execution, row)
            assert row.lease_owner == WORKER, row
            assert any(s.key == execution.key for s in t.steps)
        assert not self.passive or not t.executions
        for key in t.aborts:
            assert snap.steps[key].state is StepState.CANCELLED
        failure = before.run.error or {}
        if failure.get("reason") in ("failed", "rejected") and not isinstance(event, Retry | Skip):
            # Why a run failed is never overwritten, by a cancel or anything else,
            # until an operator reopens it.
            after = t.run.error or {}
            kept = ("reason", "step", "message")
            assert {k: after.get(k) for k in kept} == {k: failure.get(k) for k in kept}, event
        if isinstance(event, LeaseExpired):
            # A lost attempt never uses up the retry policy's budget.
            assert snap.steps[event.key].failures == before.steps[event.key].failures
        for row in t.steps:
            if row.state is StepState.RUNNING:
                assert row.detail.get("abandoned", 0) < ABANDON_LIMIT, row
        for _target, emitted in t.emits:
            if isinstance(emitted, ChildFinished):
                # A child tells its parent whether it ended by a rejection.
                reason = (t.run.error or {}).get("reason")
                assert emitted.rejected == (not emitted.succeeded and reason == "rejected")
        if isinstance(event, ChildFinished):
            # The parent step mirrors how the child ended: a rejection stays one.
            row = snap.steps[event.key]
            expected = (
                StepState.SUCCEEDED
                if event.succeeded
                else StepState.REJECTED
                if event.rejected
                else StepState.FAILED
            )
            assert row.state is expected or event.key in t.aborts, (row, event)
        for row in t.steps:
            if row.state is StepState.RUNNING and row.lease_owner is None:
                assert self.passive, row
                self.unowned.add((run_id, row.key, row.attempt))
            if row.state is StepState.PENDING:
                # Only an operator reopening a run resets a step (and so asks it again).
                assert isinstance(event, Retry | Skip), (row, event)
                self.decided.pop((run_id, row.key), None)
        for approval in t.approvals:
            # One decision per request: a decided approval is never decided again,
            # reopened or cancelled, unless a reset asked it afresh.
            key = (run_id, approval.step_key)
            if isinstance(event, Retry | Skip):
                # Reset and asked again in this very transition (and maybe stopped
                # again at once, when the reopened run fails straight away).
                self.decided.pop(key, None)
            assert key not in self.decided, (self.decided[key], approval, event)
            if approval.state in ("approved", "rejected"):
                self.decided[key] = approval.state
                won = approval.state == "approved"
                expected = StepState.SUCCEEDED if won else StepState.REJECTED
                assert snap.steps[approval.step_key].state is expected
                assert all(tm.step_key != approval.step_key for tm in snap.timers)

    # ------------------------------------------------------------ every run, every event

    def check_all(self) -> None:
        for run_id, snap in self.snapshots.items():
            self.check_run(run_id, snap)

    def check_run(self, run_id: str, snap: Snapshot) -> None:
        run = snap.run
        assert isinstance(run.state, RunState)
        if not run.state.active:
            active = {k: r.state.value for k, r in snap.steps.items() if r.state in ACTIVE}
            assert not active, f"{run_id} {run.state} with active steps {active}"
            assert snap.timers == (), f"{run_id} {run.state} with timers {snap.timers}"
            assert run.finished_at is not None
        for timer in snap.timers:
            row = snap.steps[timer.step_key]
            retry = timer.purpose is TimerPurpose.RETRY
            assert row.state is (StepState.RETRYING if retry else StepState.WAITING), timer
        for key, row in snap.steps.items():
            if row.state is StepState.RUNNING:
                assert row.attempt >= 1, row
                assert row.lease_until is not None, row
                if row.lease_owner is None:
                    assert (run_id, key, row.attempt) in self.unowned, row
        if run.parent_run_id is not None and run.state.finished:
            # A finished child has told its parent: the parent no longer waits on it.
            parent = self.snapshots[run.parent_run_id]
            row = parent.steps[run.parent_step_key or ""]
            waits_on_it = row.detail.get("child_run_id") == run_id
            assert not (waits_on_it and row.state is StepState.WAITING), (run_id, row)
        if run.parent_run_id is not None and run.state.active:
            parent = self.snapshots[run.parent_run_id]
            row = parent.steps[run.parent_step_key or ""]
            stopped = row.detail.get("child_run_id") != run_id or row.state.finished
            # A child whose parent stopped waiting may only be undoing its own steps.
            undoing = run.state is RunState.COMPENSATING
            assert undoing or not stopped, f"{run_id} runs on for a parent step that is {row.state}"
        entries = self.audit(run_id)
        if run.state is RunState.FAILED:
            # Every way of failing (a step, a rejection, the outputs) goes through
            # failure handling; a failure that is not a rejection is alerted.
            assert any(e.action == "run.failing" for e in entries), run_id
            if (run.error or {}).get("reason") == "failed":
                assert any(
                    e.kind == "alert" for rid, _, t in self.log if rid == run_id for e in t.chat
                ), run_id
        assert verify_chain(entries, head=run.audit_head) is None
        assert run.audit_seq == len(entries)
        assert run.version == sum(1 for rid, _, t in self.log if rid == run_id and t.changed)


# ---------------------------------------------------------------- random events


Action = Callable[[], object]


def possible(c: Checked, data: st.DataObject) -> list[tuple[str, Action]]:
    """What the world can do to the runs now, as (label, action): results, timers, votes."""
    actions: list[tuple[str, Action]] = []
    for run_id, snap in sorted(c.snapshots.items()):
        for key, row in sorted(snap.steps.items()):
            if row.state is RETRYING:
                skip = Skip(actor="U0OPS", key=key)
                actions.append((f"{run_id} skip {key}", lambda r=run_id, e=skip: c.event(r, e)))
            if row.state is not StepState.RUNNING:
                continue
            if row.lease_owner is None:
                actions.append((f"{run_id} claim {key}", lambda r=run_id, k=key: claim(c, r, k)))
                continue
            actions += [
                (f"{run_id} succeed {key}", lambda r=run_id, k=key: succeed(c, r, k)),
                (f"{run_id} error {key}", lambda r=run_id, k=key: error(c, r, k, data)),
                (f"{run_id} stale {key}", lambda r=run_id, k=key: stale(c, r, k, data)),
                (f"{run_id} lease {key}", lambda r=run_id, k=key: lease(c, r, k, data)),
            ]
        for timer in snap.timers:
            label = f"{run_id} fire {timer.step_key} {timer.purpose.value}"
            actions.append((label, lambda r=run_id, t=timer: fire(c, r, t.step_key, t.purpose)))
        for key, approval in sorted(snap.approvals.items()):
            if approval.state == "pending":
                actions.append(
                    (f"{run_id} vote {key}", lambda r=run_id, k=key: vote(c, r, k, data))
                )
    return actions


def operations(c: Checked, data: st.DataObject) -> list[tuple[str, Action]]:
    """What people and the clock can do at any moment: retry, skip, cancel, time passing."""

    def operate(make: Callable[[str | None], Event]) -> None:
        run_id = data.draw(st.sampled_from(sorted(c.snapshots)), label="run")
        steps = c.snapshots[run_id].steps
        # Mostly the steps an operator would name (failed or backing off), sometimes any.
        likely = sorted(k for k, r in steps.items() if r.state.failed or r.state is RETRYING)
        named = st.sampled_from(likely) if likely else st.nothing()
        # (A child cancelled before its start was applied has no steps at all.)
        anyone = st.sampled_from(sorted(steps)) if steps else st.nothing()
        key = data.draw(st.none() | named | anyone, label="key")
        passive = data.draw(st.booleans(), label="passive")
        c.event(run_id, make(key), passive=passive)

    return [
        ("retry", lambda: operate(lambda key: Retry(actor="U0OPS", key=key))),
        ("skip", lambda: operate(lambda key: Skip(actor="U0OPS", key=key))),
        ("cancel", lambda: operate(lambda key: Cancel(actor="U0OPS"))),
        ("tick", lambda: c.advance(data.draw(st.integers(1, 400), label="seconds"))),
    ]


def claim(c: Checked, run_id: str, key: str) -> None:
    row = c.snapshots[run_id].steps[key]
    t = c.event(run_id, LeaseExpired(key=key, attempt=row.attempt))
    assert t.changed
    after = c.snapshots[run_id].steps[key]
    assert (after.attempt, after.lease_owner) == (row.attempt, WORKER)


def succeed(c: Checked, run_id: str, key: str) -> None:
    row = c.snapshots[run_id].steps[key]
    owner = row.lease_owner or WORKER
    event = StepSucceeded(key=key, attempt=row.attempt, owner=owner, output={"ok": 1})
    assert c.event(run_id, event).changed


def error(c: Checked, run_id: str, key: str, data: st.DataObject) -> None:
    row = c.snapshots[run_id].steps[key]
    event = StepErrored(
        key=key,
        attempt=row.attempt,
        owner=row.lease_owner or WORKER,
        message="boom",
        retryable=data.draw(st.booleans(), label="retryable"),
        retry_after=data.draw(st.none() | st.floats(0, 100), label="retry_after"),
        status=data.draw(st.sampled_from([None, 400, 429, 500, 503]), label="status"),
    )
    assert c.event(run_id, event).changed


def stale(c: Checked, run_id: str, key: str, data: st.DataObject) -> None:
    row = c.snapshots[run_id].steps[key]
    if row.attempt > 1 and data.draw(st.booleans(), label="old attempt"):
        event = StepSucceeded(key=key, attempt=row.attempt - 1, owner=WORKER, output={})
    else:
        event = StepSucceeded(key=key, attempt=row.attempt, owner="w-other", output={})
    before = c.snapshots[run_id]
    assert c.event(run_id, event).changed is False
    assert c.snapshots[run_id] is before


def lease(c: Checked, run_id: str, key: str, data: st.DataObject) -> None:
    row = c.snapshots[run_id].steps[key]
    assert row.lease_until is not None
    if data.draw(st.booleans(), label="lapsed") and c.now <= row.lease_until:
        c.now = row.lease_until + timedelta(seconds=1)
    t = c.event(run_id, LeaseExpired(key=key, attempt=row.attempt))
    if c.now < row.lease_until:
        assert t.changed is False
        return
    assert t.changed
    after = c.snapshots[run_id].steps[key]
    assert any(a.number == row.attempt and a.outcome == "abandoned" for a in t.attempts)
    # A lost attempt never uses up the retry policy's budget...
    assert after.failures == row.failures
    if row.detail.get("abandoned", 0) + 1 < ABANDON_LIMIT:
        assert (after.key, after.state, after.attempt) == (key, StepState.RUNNING, row.attempt + 1)
    else:
        # ...but one lost too many times in a row fails for good.
        assert after.state is StepState.FAILED, after
        assert after.attempt == row.attempt
        assert "worker stopped" in (after.error or {}).get("message", "")


def fire(c: Checked, run_id: str, key: str, purpose: TimerPurpose) -> None:
    timer = c.timer(run_id, key, purpose)
    c.now = max(c.now, timer.due_at)
    c.fire_timer(run_id, key, purpose)


def vote(c: Checked, run_id: str, key: str, data: st.DataObject) -> None:
    event = CastVote(
        key=key,
        voter=data.draw(st.sampled_from(VOTERS), label="voter"),
        voter_groups=frozenset(),
        decision=data.draw(st.sampled_from(list(Decision)), label="decision"),
        reason=data.draw(st.sampled_from([None, "", "because"]), label="reason"),
    )
    c.event(run_id, event, passive=data.draw(st.booleans(), label="passive"))


@given(family=families(hazards=True), passive=st.booleans(), data=st.data())
@SETTINGS
def test_random_events_keep_every_invariant(
    family: tuple[dict[str, Any], dict[str, Any]], passive: bool, data: st.DataObject
) -> None:
    c = Checked(*family, passive=passive)
    for _ in range(data.draw(st.integers(5, 40), label="events")):
        choices = possible(c, data)
        # People step in now and then; mostly the work and the clock move the runs.
        if not choices or data.draw(st.integers(0, 7), label="operator?") == 0:
            choices = operations(c, data)
        _label, action = data.draw(st.sampled_from(choices), label="action")
        action()


# ---------------------------------------------------------------- liveness


def approve_one(c: Checked, run_id: str, step_key: str) -> None:
    snap = c.snapshots[run_id]
    approval = snap.approvals[step_key]
    step = flow_of(snap.run).step(snap.steps[step_key].step_id)
    assert isinstance(step, ApprovalStep)
    level = step.levels()[approval.level]
    assert level.approvers is not None
    voted = {vote.voter for vote in counted(approval, snap.votes)}
    voter = next(user for user in level.approvers.users if user not in voted)
    event = CastVote(
        key=step_key,
        voter=voter,
        voter_groups=frozenset(),
        decision=Decision.APPROVED,
        reason="fine",
    )
    assert c.event(run_id, event).changed


def drive_well(c: Checked, limit: int) -> None:
    """Answer everything well, across every run: results succeed, approvers approve,
    unowned attempts are claimed, timers fire in order."""
    while c.snapshots[c.root].run.state.active:
        assert c.events < limit, "no end in sight"
        steps = [
            (run_id, key, row)
            for run_id, snap in sorted(c.snapshots.items())
            for key, row in sorted(snap.steps.items())
            if row.state is StepState.RUNNING
        ]
        pending = [
            (run_id, key)
            for run_id, snap in sorted(c.snapshots.items())
            for key, approval in sorted(snap.approvals.items())
            if approval.state == "pending"
        ]
        timers = [(t.due_at, run_id, t) for run_id, s in c.snapshots.items() for t in s.timers]
        if steps:
            run_id, key, row = steps[0]
            if row.lease_owner is None:
                claim(c, run_id, key)
            else:
                succeed(c, run_id, key)
        elif pending:
            approve_one(c, *pending[0])
        else:
            assert timers, f"stuck: { {r: c.states(r) for r in c.snapshots} }"
            _, run_id, timer = min(timers, key=lambda entry: (entry[0], entry[1]))
            fire(c, run_id, timer.step_key, timer.purpose)


@given(family=families(), passive=st.booleans())
@SETTINGS
def test_a_run_where_everything_goes_well_succeeds(
    family: tuple[dict[str, Any], dict[str, Any]], passive: bool
) -> None:
    c = Checked(*family, passive=passive)
    drive_well(c, limit=400)
    assert c.snapshots[c.root].run.state is RunState.SUCCEEDED, c.states(c.root)
    assert all(s.run.state is RunState.SUCCEEDED for s in c.snapshots.values())
