"""httpx's default transport vs httpx_aiohttp's, for Relay's one shared HTTP client.

Speed: bursts of concurrent GETs against a local aiohttp server running in a
child process, so the client's event loop is measured alone; median ms per burst,
cold (a new client per burst) and warm (one client, pooled connections).

Fitness: what the server actually receives. A transport is only a candidate if
a percent-encoded ``%2E%2E`` path segment arrives as sent (else a run input of
``..`` walks up the API's path) and if a dropped connection is reported once,
as a connection error (else the transport retries on its own and calls it a
timeout).

Run: ``PYTHONPATH=. .venv/bin/python bench/http_transport.py [rounds] [concurrency]``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable

import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from bot.steps.http import make_http_client

PAYLOAD = b'{"sku": "SKU-1", "in_stock": true, "available": 7}'


def serve(port_queue: multiprocessing.Queue[int]) -> None:
    dropped = 0

    async def item(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    async def raw(request: web.Request) -> web.Response:
        return web.json_response({"raw_path": request.raw_path})

    async def drop(request: web.Request) -> web.Response:
        nonlocal dropped
        dropped += 1
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"dropped": dropped})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/item", item)
        app.router.add_get("/raw/{tail:.*}", raw)
        app.router.add_get("/drop", drop)
        app.router.add_get("/count", count)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def aiohttp_client() -> httpx.AsyncClient:
    """httpx_aiohttp with the same pool limits as ``make_http_client``."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5)
    return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), trust_env=False)


CANDIDATES: dict[str, Callable[[], httpx.AsyncClient]] = {
    "httpx default": make_http_client,
    "httpx_aiohttp": aiohttp_client,
}


async def burst(client: httpx.AsyncClient, url: str, concurrency: int) -> float:
    async def one() -> None:
        response = await client.get(url)
        response.raise_for_status()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(one())
    return time.perf_counter() - started


async def speed(
    make: Callable[[], httpx.AsyncClient], url: str, rounds: int, concurrency: int
) -> tuple[float, float]:
    cold = []
    for _ in range(max(rounds // 3, 3)):
        async with make() as client:
            cold.append(await burst(client, url, concurrency))
    warm = []
    async with make() as client:
        await burst(client, url, concurrency)
        for _ in range(rounds):
            warm.append(await burst(client, url, concurrency))
    return statistics.median(cold), statistics.median(warm)


async def fitness(make: Callable[[], httpx.AsyncClient], base: str) -> str:
    async with make() as client:
        seen = (await client.get(f"{base}/raw/items/%2E%2E")).json()["raw_path"]
        before = (await client.get(f"{base}/count")).json()["dropped"]
        try:
            await client.get(f"{base}/drop")
            error = "no error"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        sent = (await client.get(f"{base}/count")).json()["dropped"] - before
    return f"%2E%2E arrives as {seen!r}; dropped GET sent {sent}x, raised {error}"


async def main(rounds: int, concurrency: int, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CANDIDATES}
    for _ in range(3):  # interleaved, so drift on the machine hits both alike
        for name, make in CANDIDATES.items():
            results[name].append(await speed(make, f"{base}/item", rounds, concurrency))
    print(f"{concurrency} concurrent GETs, {rounds} warm bursts x 3, median ms per burst")
    for name, runs in results.items():
        cold = statistics.median(run[0] for run in runs) * 1000
        warm = statistics.median(run[1] for run in runs) * 1000
        print(f"  {name:14} cold {cold:7.1f}   warm {warm:7.1f}")
    print("fitness")
    for name, make in CANDIDATES.items():
        print(f"  {name:14} {await fitness(make, base)}")


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    try:
        asyncio.run(main(rounds, concurrency, ports.get(timeout=10)))
    finally:
        server.terminate()
        server.join()
