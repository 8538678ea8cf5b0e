"""The engine's loop outside requests: timers, lapsed leases, chat delivery, schedules.

``relay worker`` runs it alone; ``relay serve`` runs it beside the Slack app;
``relay run`` runs it until its own run has finished, without the schedules: a
terminal following one run must not start other flows' runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from bot.engine.outbox import Outbox
from bot.engine.records import Run
from bot.engine.runner import Engine
from bot.engine.states import StepState
from bot.scheduler import Scheduler

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
    """Work here until the run ends or only people (or a long wait) can move it.

    Only this run's messages (and its sub-runs') are delivered here: others
    belong to whichever chat serves them, Slack perhaps, in another process.
    """
    mine = outbox.for_run(run_id)

    async def settled() -> bool:
        # Asked at every turn of the loop, mostly while a step is in flight:
        # the run's row alone answers that, without its other four tables.
        if (await engine.store.get_run(run_id)).state.finished:
            return True
        if engine.in_flight:
            return False
        snapshot = await engine.store.snapshot(run_id)
        if snapshot.run.state.finished:
            return True
        moving = (StepState.RUNNING, StepState.RETRYING)
        if any(row.state in moving for row in snapshot.steps.values()):
            return False
        return not await engine.store.count_outbox(family=run_id)

    await run_worker(engine, mine, stop=asyncio.Event(), until=settled)
    await mine.deliver()
    return await engine.store.get_run(run_id)


async def run_worker(
    engine: Engine,
    outbox: Outbox,
    *,
    stop: asyncio.Event,
    until: Callable[[], object] | None = None,
    scheduler: Scheduler | None = None,
) -> None:
    """Work until ``stop`` is set, or until ``until()`` returns something truthy.

    With a ``scheduler``, flow triggers start runs while the loop works; its
    alarms stop when the loop does.
    """
    resumed = await engine.recover()
    if resumed:
        log.info("resumed %d steps left by a stopped worker", resumed)
    if scheduler is None:
        await _work(engine, outbox, stop=stop, until=until)
        return
    await scheduler.start()
    try:
        await _work(engine, outbox, stop=stop, until=until)
    finally:
        await scheduler.stop()


async def _work(
    engine: Engine,
    outbox: Outbox,
    *,
    stop: asyncio.Event,
    until: Callable[[], object] | None,
) -> None:
    while not stop.is_set():
        # Attempts that are ready start first: their requests then travel while
        # the loop does its own work, which runs on this thread when it is small.
        await asyncio.sleep(0)
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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: stop taking work, finish, exit 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
