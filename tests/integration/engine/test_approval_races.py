"""Many replicas decide one approval at the same instant: one outcome, and every loser told why.

Each decider is a replica of its own (engine, operations, connection pool) on the
shared database, as several ``relay serve`` processes behind a load balancer
would be. The step after the approval calls a loopback server, which counts how
often the run went on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from bot.demo.services import DemoServices
from bot.engine.operations import Actor
from bot.engine.states import Decision, RunState
from bot.errors import VoteRefused
from tests.integration.engine.support import MovableClock, Replica, flow, replica

VOTERS = [f"U0V{index:02d}" for index in range(16)]
REPLICAS = 20


def gate(name: str, extra: str = "") -> str:
    return f"""
name: {name}
services: {{echo: {{env: ECHO_URL}}}}
steps:
  - id: ok
    kind: approval
    question: Ship it?
    approvers: {{users: [{", ".join(VOTERS)}]}}
    require_reason: never
    timeout: 1h
{extra}
  - id: after
    kind: http
    method: POST
    service: echo
    path: /echo
    query: {{outcome: approved}}
on_failure:
  - id: tell
    kind: http
    method: POST
    service: echo
    path: /echo
    query: {{outcome: failed}}
"""


ONE = flow(gate("one-decides"))
TWO = flow(gate("two-decide", "    required: 2"))
FLOWS = [ONE, TWO]


@pytest.fixture
async def demo() -> AsyncIterator[DemoServices]:
    async with DemoServices() as services:
        yield services


@pytest.fixture
async def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def replicas(
    db_url: str, demo: DemoServices, clock: MovableClock
) -> AsyncIterator[list[Replica]]:
    env = {"ECHO_URL": demo.base_url}
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(replica(db_url, FLOWS, environ=env, clock=clock))
            for _ in range(REPLICAS)
        ]
        # Open each pool before the race, so the race is about the decision only.
        await asyncio.gather(*(one.store.count_runs() for one in started))
        yield started


async def at_once(calls: list[Callable[[], Awaitable[str]]]) -> list[str | VoteRefused]:
    """Start every call on the same event and collect replies or refusals."""
    go = asyncio.Event()

    async def one(call: Callable[[], Awaitable[str]]) -> str | VoteRefused:
        await go.wait()
        try:
            return await call()
        except VoteRefused as refused:
            return refused

    tasks = [asyncio.create_task(one(call)) for call in calls]
    await asyncio.sleep(0)
    go.set()
    return await asyncio.gather(*tasks)


def vote(one: Replica, run_id: str, user: str, decision: Decision) -> Callable[[], Awaitable[str]]:
    async def call() -> str:
        return await one.operations.decide(run_id, "ok", Actor(user=user, via="slack"), decision)

    return call


async def settle(replicas: list[Replica]) -> None:
    """Let the winner's replica finish the step it started, then deliver chat once."""
    for one in replicas:
        await one.engine.drain_flights()
    await replicas[0].settle()


async def decisions(one: Replica, run_id: str) -> list[dict[str, Any]]:
    return [
        {"actor": entry.actor, "action": entry.action}
        for entry in await one.store.audit(run_id)
        if entry.action.startswith(("approval.approved", "approval.rejected"))
    ]


async def test_one_decision_wins_and_every_loser_is_told_who_decided(
    replicas: list[Replica], demo: DemoServices
) -> None:
    run = await replicas[0].engine.create("one-decides", {}, started_by="U0REQ")
    # Approvals and rejections mixed, and four people clicking twice on two replicas.
    voters = [*VOTERS, *VOTERS[:4]]
    calls = [
        vote(
            replicas[index],
            run.id,
            user,
            Decision.APPROVED if index % 2 == 0 else Decision.REJECTED,
        )
        for index, user in enumerate(voters)
    ]
    results = await at_once(calls)
    await settle(replicas)

    won = [reply for reply in results if isinstance(reply, str)]
    lost = [reply for reply in results if isinstance(reply, VoteRefused)]
    assert len(won) == 1
    assert len(lost) == len(voters) - 1
    snapshot = await replicas[0].store.snapshot(run.id)
    approval = snapshot.approvals["ok"]
    assert approval.state in ("approved", "rejected")
    assert len(approval.decided_by) == 1
    winner = approval.decided_by[0]
    for refused in lost:
        message = refused.user_message
        assert f"already {approval.state}" in message or "already answered" in message, message
        if "already answered" not in message:
            assert winner in message
    assert len([v for v in snapshot.votes if v.step_key == "ok"]) == 1
    assert await decisions(replicas[0], run.id) == [
        {"actor": winner, "action": f"approval.{approval.state}"}
    ]
    requests = demo.requests("/echo")
    assert len(requests) == 1
    if approval.state == "approved":
        assert snapshot.run.state is RunState.SUCCEEDED
        assert "outcome=approved" in requests[0].raw_path
    else:
        assert snapshot.run.state is RunState.FAILED
        assert "outcome=failed" in requests[0].raw_path


async def test_quorum_of_two_counts_exactly_two(
    replicas: list[Replica], demo: DemoServices
) -> None:
    run = await replicas[0].engine.create("two-decide", {}, started_by="U0REQ")
    voters = [*VOTERS, *VOTERS[:4]]
    calls = [
        vote(replicas[index], run.id, user, Decision.APPROVED) for index, user in enumerate(voters)
    ]
    results = await at_once(calls)
    await settle(replicas)

    counted = [reply for reply in results if isinstance(reply, str)]
    assert len(counted) == 2
    assert sum("more approvals" in reply for reply in counted) == 1
    snapshot = await replicas[0].store.snapshot(run.id)
    approval = snapshot.approvals["ok"]
    assert approval.state == "approved"
    assert len(set(approval.decided_by)) == 2
    assert sorted(v.voter for v in snapshot.votes) == sorted(approval.decided_by)
    for refused in (reply for reply in results if isinstance(reply, VoteRefused)):
        assert "already" in refused.user_message
    assert len(await decisions(replicas[0], run.id)) == 1
    assert snapshot.run.state is RunState.SUCCEEDED
    assert len(demo.requests("/echo")) == 1


async def test_votes_after_a_cancel_are_refused_with_the_reason(
    replicas: list[Replica], demo: DemoServices
) -> None:
    run = await replicas[0].engine.create("one-decides", {}, started_by="U0REQ")
    await replicas[1].operations.cancel(run.id, Actor(user="U0REQ"), reason="not needed")
    calls = [
        vote(replicas[index], run.id, user, Decision.APPROVED) for index, user in enumerate(VOTERS)
    ]
    results = await at_once(calls)
    await settle(replicas)

    assert all(isinstance(reply, VoteRefused) for reply in results)
    assert all("cancelled" in reply.user_message for reply in results)  # type: ignore[union-attr]
    snapshot = await replicas[0].store.snapshot(run.id)
    assert snapshot.run.state is RunState.CANCELLED
    assert snapshot.votes == ()
    assert demo.requests("/echo") == []


async def test_votes_after_the_timeout_are_refused_with_the_reason(
    replicas: list[Replica], demo: DemoServices, clock: MovableClock
) -> None:
    run = await replicas[0].engine.create("one-decides", {}, started_by="U0REQ")
    clock.advance(3600)
    ticks = await asyncio.gather(*(one.engine.tick() for one in replicas[:5]))
    assert sum(ticks) == 1
    results = await at_once(
        [
            vote(replicas[index], run.id, user, Decision.APPROVED)
            for index, user in enumerate(VOTERS)
        ]
    )
    await settle(replicas)

    assert all(isinstance(reply, VoteRefused) for reply in results)
    assert all(
        "already rejected (timeout)" in reply.user_message  # type: ignore[union-attr]
        for reply in results
    )
    snapshot = await replicas[0].store.snapshot(run.id)
    assert snapshot.run.state is RunState.FAILED
    assert [r.raw_path for r in demo.requests("/echo")] == ["/echo?outcome=failed"]
