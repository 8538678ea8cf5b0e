"""Throughput under load: 200 runs of 5 HTTP steps started at once.

Each round starts 200 runs together (``Operations.start`` from 200 tasks) while
the worker loop (``bot.worker.run_worker``) runs beside them, as in ``relay
worker``, and stops when every run has finished. Beside it, the same 1000
requests made directly with the same client (``make_http_client``) and the same
concurrency: 200 tasks, each making its 5 requests in sequence. Throughput
ratio = direct time / engine time; the halves of a round run back to back.
Target: median >= 0.80.

Run: ``PYTHONPATH=. .venv/bin/python bench/fanout.py [rounds]`` (default 5).
"""

from __future__ import annotations

import asyncio
import sys
import time

from bench.common import (
    all_finished,
    engine_services,
    http_chain_flow,
    loopback_service,
    median,
    plain_chain,
    table,
    write_json,
)
from bot import eventloop
from bot.engine.operations import Actor
from bot.engine.states import RunState
from bot.steps.http import make_http_client
from bot.wiring import Services
from bot.worker import run_worker

FLOW = "fanout"
RUNS = 200
STEPS = 5
TARGET = 0.80


async def direct(base_url: str, runs: int = RUNS) -> float:
    """200 concurrent chains of 5 sequential requests, with no engine around them."""
    async with make_http_client() as client:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for run in range(runs):
                group.create_task(plain_chain(client, base_url, run, STEPS))
        return time.perf_counter() - started


async def through_engine(services: Services, runs: int = RUNS) -> float:
    actor = Actor(user="U0BENCH", via="bench")
    created_all = asyncio.Event()

    async def finished() -> bool:
        # Not before every run exists: a loop turn between two starts would
        # find nothing unfinished and stop, and the round would time the starts.
        return created_all.is_set() and await all_finished(services)

    started = time.perf_counter()
    worker = asyncio.create_task(
        run_worker(services.engine, services.outbox, stop=asyncio.Event(), until=finished)
    )
    created = await asyncio.gather(
        *(services.operations.start(FLOW, {}, actor) for _ in range(runs))
    )
    created_all.set()
    await worker
    elapsed = time.perf_counter() - started
    await services.engine.drain_flights()
    for run in created:
        done = await services.store.get_run(run.id)
        if done.state is not RunState.SUCCEEDED:
            raise SystemExit(f"run {run.id} ended {done.state.value}: {done.error}")
    return elapsed


async def main(rounds: int, base_url: str) -> None:
    async with engine_services({FLOW: http_chain_flow(FLOW, STEPS)}, base_url=base_url) as svc:
        # A few unmeasured runs of each warm the pools, caches and the database file.
        await direct(base_url, runs=20)
        await through_engine(svc, runs=20)
        results = []
        for number in range(1, rounds + 1):
            plain = await direct(base_url)
            engine = await through_engine(svc)
            ratio = plain / engine
            results.append({"direct_s": plain, "engine_s": engine, "ratio": ratio})
            print(
                f"round {number}: direct {plain:.2f} s, engine {engine:.2f} s, "
                f"throughput ratio {ratio:.2f}",
                flush=True,
            )
    ratio = median([r["ratio"] for r in results])
    plain = median([r["direct_s"] for r in results])
    engine = median([r["engine_s"] for r in results])
    requests = RUNS * STEPS
    table(
        f"fan-out: {RUNS} runs x {STEPS} HTTP steps at once, median of {rounds} rounds",
        ["measure", "value", "target"],
        [
            ["direct (s)", f"{plain:.2f}", ""],
            ["engine (s)", f"{engine:.2f}", ""],
            ["direct (requests/s)", f"{requests / plain:.0f}", ""],
            ["engine (steps/s)", f"{requests / engine:.0f}", ""],
            ["throughput ratio", f"{ratio:.2f}", f">= {TARGET:.2f}"],
        ],
    )
    write_json(
        "fanout",
        {
            "runs": RUNS,
            "steps": STEPS,
            "rounds": results,
            "median": {"direct_s": plain, "engine_s": engine, "ratio": ratio},
            "target_ratio": TARGET,
            "met": ratio >= TARGET,
        },
    )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with loopback_service() as url:
        eventloop.run(main(count, url))
