"""Engine overhead per step: a flow of 20 HTTP steps run 50 times in a row.

Each round runs the 50 runs one after another through the engine (started with
``Operations.start`` and followed to the end with ``bot.worker.follow``, as
``relay run`` does), and beside them the same 1000 requests as a plain loop
with the same HTTP client (``make_http_client``). Overhead per step is
(engine time - plain loop time) / 1000; the two halves of a round run back to
back, so drift on a shared machine hits both alike. Target: median <= 0.5 ms.

Run: ``PYTHONPATH=. .venv/bin/python bench/chain.py [rounds]`` (default 5).
"""

from __future__ import annotations

import sys
import time

from bench.common import (
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
from bot.worker import follow

FLOW = "chain"
STEPS = 20
RUNS = 50
TARGET_MS = 0.5


async def plain_loop(base_url: str, runs: int = RUNS) -> float:
    """The same requests, headers included, with no engine around them."""
    async with make_http_client() as client:
        started = time.perf_counter()
        for run in range(runs):
            await plain_chain(client, base_url, run, STEPS)
        return time.perf_counter() - started


async def engine_chain(services: Services, runs: int = RUNS) -> float:
    actor = Actor(user="U0BENCH", via="bench")
    started = time.perf_counter()
    for _ in range(runs):
        run = await services.operations.start(FLOW, {}, actor)
        done = await follow(services.engine, services.outbox, run.id)
        if done.state is not RunState.SUCCEEDED:
            raise SystemExit(f"run {run.id} ended {done.state.value}: {done.error}")
    return time.perf_counter() - started


async def main(rounds: int, base_url: str) -> None:
    async with engine_services({FLOW: http_chain_flow(FLOW, STEPS)}, base_url=base_url) as svc:
        # A few unmeasured runs of each warm the pools, caches and the database file.
        await plain_loop(base_url, runs=5)
        await engine_chain(svc, runs=5)
        results = []
        for number in range(1, rounds + 1):
            plain = await plain_loop(base_url)
            engine = await engine_chain(svc)
            overhead = (engine - plain) / (RUNS * STEPS) * 1000
            results.append({"plain_s": plain, "engine_s": engine, "overhead_ms": overhead})
            print(
                f"round {number}: plain {plain:.2f} s, engine {engine:.2f} s, "
                f"overhead {overhead:.3f} ms/step",
                flush=True,
            )
    overhead = median([r["overhead_ms"] for r in results])
    plain = median([r["plain_s"] for r in results])
    engine = median([r["engine_s"] for r in results])
    table(
        f"chain: {RUNS} runs x {STEPS} HTTP steps in a row, median of {rounds} rounds",
        ["measure", "value", "target"],
        [
            ["plain loop (s)", f"{plain:.2f}", ""],
            ["engine (s)", f"{engine:.2f}", ""],
            ["plain loop per request (ms)", f"{plain / (RUNS * STEPS) * 1000:.3f}", ""],
            ["engine per step (ms)", f"{engine / (RUNS * STEPS) * 1000:.3f}", ""],
            ["overhead per step (ms)", f"{overhead:.3f}", f"<= {TARGET_MS}"],
        ],
    )
    write_json(
        "chain",
        {
            "runs": RUNS,
            "steps": STEPS,
            "rounds": results,
            "median": {"plain_s": plain, "engine_s": engine, "overhead_ms_per_step": overhead},
            "target_ms_per_step": TARGET_MS,
            "met": overhead <= TARGET_MS,
        },
    )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with loopback_service() as url:
        eventloop.run(main(count, url))
