"""What the engine benchmarks share: the loopback service, the engine, tables and JSON.

The loopback service is an aiohttp app in a child process, so the event loop
being measured runs the engine (or the plain loop it is compared with) and
nothing else. The engine is built the way ``relay worker`` builds it, through
``bot.wiring.build_services``, on a fresh SQLite file with the default settings,
and talks to a chat that does nothing, so chat latency never enters a figure.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bot.directory import StaticDirectory
from bot.engine.ports import RunView
from bot.engine.runner import idempotency_key
from bot.engine.states import RunState
from bot.settings import load_settings
from bot.steps.http import USER_AGENT
from bot.wiring import Services, build_services

RESULTS = Path(__file__).parent / "results"
PAYLOAD = b'{"sku": "SKU-1", "in_stock": true, "available": 7}'
SERVICE_ENV = "BENCH_API_URL"


# ---------------------------------------------------------------- the loopback service


def _serve(port_queue: multiprocessing.Queue[int]) -> None:
    async def item(_: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/item/{n}", item)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def loopback_service() -> Iterator[str]:
    """Serve ``GET /item/{n}`` (a small JSON body) from a child process; yields the base URL."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=10)}"
    finally:
        server.terminate()
        server.join()


# ---------------------------------------------------------------- the engine


class NullChat:
    """A chat that accepts everything and shows nothing: only the engine is measured."""

    async def run_changed(self, view: RunView) -> None:
        return None

    async def approval_changed(self, view: RunView, step_key: str) -> None:
        return None

    async def alert(self, view: RunView, step_key: str) -> None:
        return None

    async def remind(self, view: RunView, step_key: str) -> None:
        return None

    def literal(self, text: str) -> str:
        return text

    async def notify(
        self, view: RunView, *, channel: str | None, user: str | None, text: str
    ) -> None:
        return None


def http_chain_flow(name: str, steps: int) -> str:
    """A flow of ``steps`` sequential GETs to the loopback service."""
    lines = [
        f"name: {name}",
        "services:",
        f"  api: {{env: {SERVICE_ENV}}}",
        "steps:",
    ]
    for index in range(steps):
        lines += [
            f"  - id: call_{index:02d}",
            "    kind: http",
            "    service: api",
            f'    path: "/item/{index}"',
        ]
    return "\n".join(lines) + "\n"


SYNCHRONOUS = load_settings().sqlite_synchronous
"""The ``RELAY_SQLITE_SYNCHRONOUS`` every bench runs with (the default unless set)."""


@asynccontextmanager
async def engine_services(
    flows: dict[str, str],
    *,
    base_url: str = "http://127.0.0.1:9",
    members: dict[str, list[str]] | None = None,
) -> AsyncIterator[Services]:
    """The engine on a fresh SQLite file in a temp dir, with ``flows`` (name → YAML)."""
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir:
        flows_dir = Path(workdir) / "flows"
        flows_dir.mkdir()
        for name, text in flows.items():
            (flows_dir / f"{name}.yaml").write_text(text, encoding="utf-8")
        settings = load_settings(
            DATABASE_URL=f"sqlite:///{Path(workdir) / 'bench.db'}",
            RELAY_FLOWS_DIR=str(flows_dir),
        )
        async with build_services(
            settings,
            chat=NullChat(),
            directory=StaticDirectory(members or {}),
            environ={SERVICE_ENV: base_url},
        ) as services:
            missing = set(flows) - set(services.catalog.flows)
            if missing:
                problems = "; ".join(p.format() for p in services.catalog.problems)
                raise SystemExit(f"bench flows did not load: {sorted(missing)}: {problems}")
            yield services


async def all_finished(services: Services) -> bool:
    """True when no run is left unfinished (the worker loop's stop condition)."""
    unfinished = [state for state in RunState if not state.finished]
    return not await services.store.count_runs(states=unfinished)


# ---------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print an aligned table: first column left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    print(title)
    print("  " + line(cells[0]))
    print("  " + "  ".join("-" * width for width in widths))
    for row in cells[1:]:
        print("  " + line(row))


def machine() -> dict[str, Any]:
    """Where the figures came from: they only compare within one run on one machine."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite_synchronous": SYNCHRONOUS,
        "journal_mode": "WAL",
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` with the machine and the time of the run."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "bench": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


async def plain_chain(client: httpx.AsyncClient, base_url: str, run: int, steps: int) -> None:
    """The requests one run of ``http_chain_flow`` makes, headers included, without the engine."""
    for index in range(steps):
        response = await client.get(
            f"{base_url}/item/{index}",
            headers={
                "User-Agent": USER_AGENT,
                "Idempotency-Key": idempotency_key(str(run), str(index)),
            },
        )
        response.raise_for_status()
        response.json()
