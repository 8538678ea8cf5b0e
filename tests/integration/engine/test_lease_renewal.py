"""Renewing leases never stops a step that started while the renewal was under way.

The renewal asks the database about the flights it knows, awaits the answer,
then stops those the database says were taken over. A flight that started
during that await was not asked about; it must keep running. Starting many
runs while the worker ticks in a tight loop makes that interleaving certain.
"""

from __future__ import annotations

import asyncio

from bot.demo.services import DemoServices
from bot.engine.operations import Actor
from bot.engine.states import RunState
from tests.integration.engine.support import ECHO, MovableClock, replica

RUNS = 40


async def test_steps_started_during_a_renewal_keep_running(db_url: str) -> None:
    async with DemoServices() as services:
        services.delay("POST /echo", 0.3)
        env = {"API_URL": services.base_url}
        async with replica(db_url, [ECHO], environ=env) as worker:
            done = asyncio.Event()

            async def keep_ticking() -> None:
                while not done.is_set():
                    await worker.engine.tick()
                    await asyncio.sleep(0)

            ticking = asyncio.create_task(keep_ticking())
            actor = Actor(user="U0ALICE")
            started = []
            for n in range(RUNS):
                started.append(await worker.operations.start("echo", {"n": n}, actor))
                await asyncio.sleep(0.005)
            async with asyncio.timeout(10):
                while True:
                    runs = [await worker.store.get_run(run.id) for run in started]
                    if all(run.state is RunState.SUCCEEDED for run in runs):
                        break
                    await asyncio.sleep(0.05)
            done.set()
            await ticking
            attempts = [a for run in started for a in await worker.store.attempts(run.id)]
            assert [a.outcome for a in attempts] == ["succeeded"] * RUNS
            assert len(services.requests("/echo")) == RUNS


async def test_a_lease_is_renewed_once_it_is_half_a_second_old(db_url: str) -> None:
    clock = MovableClock()
    async with DemoServices() as services:
        services.delay("POST /echo", 1.0)
        env = {"API_URL": services.base_url}
        async with replica(db_url, [ECHO], environ=env, clock=clock) as worker:
            run = await worker.operations.start("echo", {"n": 1}, Actor(user="U0ALICE"))

            async def lease_ends_in() -> float:
                row = (await worker.store.snapshot(run.id)).steps["call"]
                assert row.lease_until is not None
                return (row.lease_until - clock.now()).total_seconds()

            clock.advance(0.4)
            await worker.engine.tick()
            assert await lease_ends_in() == 29.6, "a young flight's lease is left alone"
            clock.advance(0.2)
            await worker.engine.tick()
            assert await lease_ends_in() == 30, "renewed"
            clock.advance(0.2)
            await worker.engine.tick()
            assert await lease_ends_in() == 29.8
            clock.advance(0.4)
            await worker.engine.tick()
            assert await lease_ends_in() == 30, "and again half a second later"
            await worker.engine.drain_flights()
            assert (await worker.store.get_run(run.id)).state is RunState.SUCCEEDED
