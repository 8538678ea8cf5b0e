"""The engine's loop outside requests: timers, lapsed leases, chat delivery.

``relay worker`` runs it alone; ``relay serve`` runs it beside the Slack app;
``relay run`` runs it until its own run has finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.engine.outbox import Outbox
from bot.engine.records import Run
from bot.engine.runner import Engine
from bot.engine.states import StepState

log = logging.getLogger("relay.worker")

TICK_SECONDS = 0.25


async def parked(engine: Engine) -> bool:
    """True when nothing can move without a person.

    No attempt in flight or backing off, no chat message waiting to go out;
    waits, approvals and sub-runs may remain.
    """
    if engine.in_flight:
        return False
    store = engine.store
    if await store.count_steps(states=[StepState.RUNNING, StepState.RETRYING]):
        return False
    return not await store.count_outbox()


async def follow(engine: Engine, outbox: Outbox, run_id: str) -> Run:
    """Work here until the run ends or only people (or a long wait) can move it."""

    async def settled() -> bool:
        run = await engine.store.get_run(run_id)
        return run.state.finished or await parked(engine)

    await run_worker(engine, outbox, stop=asyncio.Event(), until=settled)
    await outbox.deliver()
    return await engine.store.get_run(run_id)


async def run_worker(
    engine: Engine,
    outbox: Outbox,
    *,
    stop: asyncio.Event,
    until: Callable[[], object] | None = None,
) -> None:
    """Work until ``stop`` is set, or until ``until()`` returns something truthy."""
    resumed = await engine.recover()
    if resumed:
        log.info("resumed %d steps left by a stopped worker", resumed)
    while not stop.is_set():
        await engine.tick()
        await outbox.deliver()
        if until is not None:
            done = until()
            if asyncio.iscoroutine(done):
                done = await done
            if done:
                break
        waiter = asyncio.ensure_future(stop.wait())
        kicks = [asyncio.ensure_future(engine.wait_for_wake(TICK_SECONDS)), waiter]
        if not engine.chat_pending.is_set():
            kicks.append(asyncio.ensure_future(engine.chat_pending.wait()))
        await asyncio.wait(kicks, return_when=asyncio.FIRST_COMPLETED)
        for task in kicks:
            task.cancel()
        await asyncio.gather(*kicks, return_exceptions=True)
        engine.chat_pending.clear()
