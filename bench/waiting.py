"""Many runs waiting for people: memory while parked, and time to decide them all.

10,000 runs of a one-step approval flow are started (``Operations.start``)
while the worker loop (``bot.worker.run_worker``) delivers their chat effects,
until nothing can move without a person. A waiting run is rows, not a task: the
process's RSS (after ``gc.collect()``) may grow by at most 20 MB from before the
first run to when all 10,000 are parked. Then all 10,000 are approved through
``Operations.decide`` (what the CLI and Slack call for a vote), a few at a time
as approvers' clicks arrive, with the worker loop running; the time until every
run has succeeded and every chat effect is delivered must be at most 15 s.

One approved run before the first RSS reading loads the code paths once, so
the growth measured is the runs', not the first import of a module.

Run: ``PYTHONPATH=. .venv/bin/python bench/waiting.py [runs] [concurrency]``
(default 10000 and 20).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable

import psutil

from bench.common import all_finished, engine_services, table, write_json
from bot import eventloop
from bot.engine.operations import Actor
from bot.engine.states import Decision, RunState
from bot.wiring import Services
from bot.worker import parked, run_worker

FLOW = "approve"
APPROVER = "U0APPROVER"
RSS_TARGET_MB = 20.0
DECIDE_TARGET_S = 15.0

FLOW_YAML = f"""\
name: {FLOW}
steps:
  - id: sign_off
    kind: approval
    question: "Approve request {{{{ run.id }}}}?"
    approvers: {{users: [{APPROVER}]}}
    required: 1
"""


def rss_mb() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


async def in_parallel(width: int, count: int, job: Callable[[int], Awaitable[None]]) -> None:
    """Call ``job(0)`` … ``job(count - 1)``, ``width`` at a time.

    ``width`` tasks take the next number in turn, so no more than ``width``
    coroutines ever exist: the memory measured is the engine's, not a backlog
    of 10,000 waiting coroutines.
    """
    numbers = iter(range(count))

    async def lane() -> None:
        for number in numbers:
            await job(number)

    await asyncio.gather(*(lane() for _ in range(width)))


async def with_worker(
    services: Services, work: Awaitable[None], until: Callable[[], Awaitable[bool]]
) -> None:
    """Run ``work`` beside the worker loop, which stops once ``until()`` holds after it."""
    finished = asyncio.Event()

    async def done() -> bool:
        return finished.is_set() and await until()

    worker = asyncio.create_task(
        run_worker(services.engine, services.outbox, stop=asyncio.Event(), until=done)
    )
    await work
    finished.set()
    await worker


async def main(runs: int, concurrency: int) -> None:
    requester = Actor(user="U0REQUESTER", via="bench")
    approver = Actor(user=APPROVER, via="bench")
    async with engine_services({FLOW: FLOW_YAML}) as services:
        ops = services.operations

        async def park_all(count: int) -> list[str]:
            ids: list[str] = []

            async def start(_: int) -> None:
                ids.append((await ops.start(FLOW, {}, requester)).id)

            await with_worker(
                services,
                in_parallel(concurrency, count, start),
                lambda: parked(services.engine),
            )
            return ids

        async def decide_all(ids: list[str]) -> None:
            async def approve(number: int) -> None:
                await ops.decide(ids[number], "sign_off", approver, Decision.APPROVED)

            await with_worker(
                services,
                in_parallel(concurrency, len(ids), approve),
                lambda: _settled(services),
            )

        await decide_all(await park_all(1))
        before = rss_mb()
        started = time.perf_counter()
        ids = await park_all(runs)
        create_s = time.perf_counter() - started
        waiting = await services.store.count_runs(states=[RunState.WAITING])
        after = rss_mb()
        print(f"{waiting} runs waiting; created in {create_s:.1f} s", flush=True)
        started = time.perf_counter()
        await decide_all(ids)
        decide_s = time.perf_counter() - started
        succeeded = await services.store.count_runs(states=[RunState.SUCCEEDED])
        if succeeded != runs + 1:
            raise SystemExit(f"only {succeeded - 1} of {runs} runs succeeded")
        final = rss_mb()
    growth = after - before
    table(
        f"waiting: {runs} runs parked on an approval, then all approved ({concurrency} at a time)",
        ["measure", "value", "target"],
        [
            ["RSS before (MB)", f"{before:.1f}", ""],
            ["RSS with all parked (MB)", f"{after:.1f}", ""],
            ["RSS growth (MB)", f"{growth:.1f}", f"<= {RSS_TARGET_MB:.0f}"],
            ["create and park all (s)", f"{create_s:.1f}", ""],
            ["decide and finish all (s)", f"{decide_s:.1f}", f"<= {DECIDE_TARGET_S:.0f}"],
            ["decide per run (ms)", f"{decide_s / runs * 1000:.2f}", ""],
            ["RSS after deciding (MB)", f"{final:.1f}", ""],
        ],
    )
    write_json(
        "waiting",
        {
            "runs": runs,
            "concurrency": concurrency,
            "rss_mb": {"before": before, "parked": after, "growth": growth, "after": final},
            "create_s": create_s,
            "decide_s": decide_s,
            "targets": {"rss_growth_mb": RSS_TARGET_MB, "decide_s": DECIDE_TARGET_S},
            "met": growth <= RSS_TARGET_MB and decide_s <= DECIDE_TARGET_S,
        },
    )


async def _settled(services: Services) -> bool:
    return await all_finished(services) and await parked(services.engine)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    eventloop.run(main(count, width))
