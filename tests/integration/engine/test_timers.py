"""Timers on a real SQLite file, driven by a clock the test moves and ``engine.tick()``.

Nothing here sleeps: every timer is a row with a due time, and a tick before
that time must leave the run exactly where it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.demo.services import DemoServices
from bot.engine.operations import Actor
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from bot.errors import VoteRefused
from tests.integration.engine.support import MovableClock, Replica, flow, replica

HOUR = 3600.0


@pytest.fixture
async def demo() -> AsyncIterator[DemoServices]:
    async with DemoServices() as services:
        yield services


@pytest.fixture
async def one(sqlite_url: str, demo: DemoServices) -> AsyncIterator[Replica]:
    """A replica holding every flow of this module, on a clock standing at T0."""
    flows = [GATE_APPROVE, GATE_REJECT, ESCALATING, REMINDING, WAITING, RETRYING]
    async with replica(
        sqlite_url, flows, clock=MovableClock(), environ={"ECHO_URL": demo.base_url}
    ) as started:
        yield started


def gate(name: str, policy: str) -> str:
    return f"""
name: {name}
services: {{echo: {{env: ECHO_URL}}}}
steps:
  - id: ok
    kind: approval
    question: Go on?
    approvers: {{users: [U0A]}}
    timeout: 1h
    on_timeout: {policy}
  - id: after
    kind: http
    method: POST
    service: echo
    path: /echo
"""


GATE_APPROVE = flow(gate("gate-approve", "approve"))
GATE_REJECT = flow(gate("gate-reject", "reject"))

ESCALATING = flow(
    """
name: escalating
services: {echo: {env: ECHO_URL}}
steps:
  - id: ok
    kind: approval
    question: Go on?
    approvers: {users: [U0A]}
    timeout: 1h
    on_timeout: escalate
    escalate:
      approvers: {users: [U0BOSS]}
      timeout: 2h
      on_timeout: reject
  - id: after
    kind: http
    method: POST
    service: echo
    path: /echo
"""
)

REMINDING = flow(
    """
name: reminding
steps:
  - id: ok
    kind: approval
    question: Go on?
    approvers: {users: [U0A]}
    timeout: 1h
    remind_every: 25m
"""
)

WAITING = flow(
    """
name: waiting
services: {echo: {env: ECHO_URL}}
steps:
  - id: pause
    kind: wait
    duration: 10m
  - id: after
    kind: http
    method: POST
    service: echo
    path: /echo
"""
)

RETRYING = flow(
    """
name: retrying
services: {echo: {env: ECHO_URL}}
steps:
  - id: call
    kind: http
    method: POST
    service: echo
    path: /echo
    retry: {attempts: 3, backoff: 30s, jitter: false}
"""
)


def clock_of(one: Replica) -> MovableClock:
    assert isinstance(one.engine.clock, MovableClock)
    return one.engine.clock


async def start(one: Replica, flow_name: str) -> str:
    run = await one.engine.create(flow_name, {}, started_by="U0REQ")
    await one.settle()
    return run.id


async def move(one: Replica, seconds: float) -> None:
    """Move the clock, fire what is due, and let every consequence land."""
    clock_of(one).advance(seconds)
    await one.engine.tick()
    await one.settle()


async def timer_due(one: Replica, run_id: str, key: str, purpose: TimerPurpose) -> float | None:
    snapshot = await one.store.snapshot(run_id)
    for timer in snapshot.timers:
        if (timer.step_key, timer.purpose) == (key, purpose):
            return (timer.due_at - clock_of(one).now()).total_seconds()
    return None


@pytest.mark.parametrize(
    ("flow_name", "step_state", "run_state", "calls"),
    [
        ("gate-approve", StepState.SUCCEEDED, RunState.SUCCEEDED, 1),
        ("gate-reject", StepState.REJECTED, RunState.FAILED, 0),
    ],
)
async def test_approval_timeout_follows_on_timeout(
    one: Replica,
    demo: DemoServices,
    flow_name: str,
    step_state: StepState,
    run_state: RunState,
    calls: int,
) -> None:
    run_id = await start(one, flow_name)
    assert await timer_due(one, run_id, "ok", TimerPurpose.APPROVAL_TIMEOUT) == HOUR

    await move(one, HOUR - 1)
    snapshot = await one.store.snapshot(run_id)
    assert snapshot.steps["ok"].state is StepState.WAITING
    assert snapshot.approvals["ok"].state == "pending"

    await move(one, 1)
    snapshot = await one.store.snapshot(run_id)
    assert snapshot.steps["ok"].state is step_state
    assert snapshot.approvals["ok"].how == "timeout"
    assert snapshot.run.state is run_state
    assert len(demo.requests("/echo")) == calls
    with pytest.raises(VoteRefused):
        await one.operations.decide(run_id, "ok", Actor(user="U0A"), Decision.APPROVED)


async def test_reminders_reach_the_chat_until_the_deadline(one: Replica) -> None:
    run_id = await start(one, "reminding")
    assert one.chat.count("remind", "ok") == 0

    await move(one, 25 * 60 - 1)
    assert one.chat.count("remind", "ok") == 0
    await move(one, 1)
    assert one.chat.count("remind", "ok") == 1
    await move(one, 25 * 60)
    assert one.chat.count("remind", "ok") == 2
    assert await timer_due(one, run_id, "ok", TimerPurpose.REMINDER) is None

    await move(one, 10 * 60)
    assert (await one.store.get_run(run_id)).state is RunState.FAILED
    assert one.chat.count("remind", "ok") == 2


async def test_escalation_moves_the_approval_to_the_next_level(
    one: Replica, demo: DemoServices
) -> None:
    run_id = await start(one, "escalating")
    asked = one.chat.count("approval_changed", "ok")

    await move(one, HOUR)
    snapshot = await one.store.snapshot(run_id)
    assert snapshot.approvals["ok"].level == 1
    assert snapshot.approvals["ok"].state == "pending"
    assert await timer_due(one, run_id, "ok", TimerPurpose.APPROVAL_TIMEOUT) == 2 * HOUR
    assert one.chat.count("approval_changed", "ok") > asked

    with pytest.raises(VoteRefused):
        await one.operations.decide(run_id, "ok", Actor(user="U0A"), Decision.APPROVED)
    await one.operations.decide(run_id, "ok", Actor(user="U0BOSS"), Decision.APPROVED)
    await one.settle()
    run = await one.store.get_run(run_id)
    assert run.state is RunState.SUCCEEDED
    assert len(demo.requests("/echo")) == 1


async def test_wait_step_holds_the_run_until_its_time(one: Replica, demo: DemoServices) -> None:
    run_id = await start(one, "waiting")
    assert await timer_due(one, run_id, "pause", TimerPurpose.WAIT) == 600

    await move(one, 599)
    assert (await one.store.snapshot(run_id)).steps["pause"].state is StepState.WAITING
    assert demo.requests("/echo") == []

    await move(one, 1)
    assert (await one.store.get_run(run_id)).state is RunState.SUCCEEDED
    assert len(demo.requests("/echo")) == 1


async def test_http_retry_waits_for_its_backoff_timer(one: Replica, demo: DemoServices) -> None:
    demo.fail("POST /echo", status=503, times=1)
    run_id = await start(one, "retrying")
    snapshot = await one.store.snapshot(run_id)
    assert snapshot.steps["call"].state is StepState.RETRYING
    assert await timer_due(one, run_id, "call", TimerPurpose.RETRY) == 30
    assert len(demo.requests("/echo")) == 1

    await move(one, 29)
    assert len(demo.requests("/echo")) == 1
    assert (await one.store.snapshot(run_id)).steps["call"].state is StepState.RETRYING

    await move(one, 1)
    requests = demo.requests("/echo")
    assert len(requests) == 2
    assert requests[0].idempotency_key == requests[1].idempotency_key
    assert (await one.store.get_run(run_id)).state is RunState.SUCCEEDED
    assert [a.number for a in await one.store.attempts(run_id)] == [1, 2]
