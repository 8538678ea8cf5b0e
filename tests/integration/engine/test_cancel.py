"""Cancelling from another replica abandons the call a worker is making, within a tick or so.

The HTTP step calls a loopback server that holds the request for 30 s. A second
engine (another replica, or the CLI) cancels the run; the worker running the
attempt learns it when it renews its lease, drops the request, and the server
sees the connection close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.engine.operations import Actor
from bot.engine.states import RunState, StepState
from bot.worker import run_worker
from tests.integration.engine.support import flow, replica

HOLD = flow(
    """
name: hold
services: {slow: {env: SLOW_URL}}
steps:
  - id: call
    kind: http
    method: POST
    service: slow
    path: /hold
    timeout: 1m
  - id: never
    kind: notify
    text: not reached
"""
)


class HoldingServer:
    """Holds every request for 30 s and notes when a client gives up on one."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.closed_at: float | None = None
        self.closed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _hold(self, request: web.Request) -> web.Response:
        self.arrived.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.closed_at = time.monotonic()
            self.closed.set()
            raise
        return web.json_response({"held": 30})

    async def __aenter__(self) -> HoldingServer:
        app = web.Application()
        app.router.add_post("/hold", self._hold)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[HoldingServer]:
    async with HoldingServer() as held:
        yield held


async def test_cancel_from_another_replica_abandons_the_call(
    db_url: str, server: HoldingServer
) -> None:
    env = {"SLOW_URL": server.url}
    async with (
        replica(db_url, [HOLD], environ=env) as worker,
        replica(db_url, [HOLD], environ=env, passive=True) as cli,
    ):
        stop = asyncio.Event()
        loop = asyncio.create_task(run_worker(worker.engine, worker.outbox, stop=stop))
        run = await worker.engine.create("hold", {}, started_by="U0OPS")
        await asyncio.wait_for(server.arrived.wait(), 5)

        cancelled_at = time.monotonic()
        await cli.operations.cancel(run.id, Actor(user="U0OPS"), reason="wrong order")
        await asyncio.wait_for(server.closed.wait(), 5)
        while (await cli.store.get_run(run.id)).state is not RunState.CANCELLED:
            assert time.monotonic() - cancelled_at < 5
            await asyncio.sleep(0.05)
        ended_at = time.monotonic()
        stop.set()
        await loop
        await worker.engine.drain_flights()
        snapshot = await cli.store.snapshot(run.id)

    assert server.closed_at is not None
    assert server.closed_at - cancelled_at < 2
    assert ended_at - cancelled_at < 2
    assert worker.engine.in_flight == 0
    assert snapshot.steps["call"].state is not StepState.SUCCEEDED
    assert "never" not in snapshot.steps or snapshot.steps["never"].state is not StepState.SUCCEEDED
    assert worker.chat.texts == []
