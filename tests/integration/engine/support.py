"""Real engines for integration tests: each replica has its own connection pool and HTTP client.

Time is a ``MovableClock`` the test moves; chat is a ``RecordingChat`` that lists
every call the outbox delivers (a test double of our own port, not of a library).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import yaml

from bot.definitions.models import FlowDef
from bot.directory import StaticDirectory
from bot.engine.operations import Operations
from bot.engine.outbox import Outbox
from bot.engine.ports import RunView
from bot.engine.runner import Clock, Engine
from bot.steps.http import HttpExecutor, make_http_client
from bot.steps.notify import NotifyExecutor
from bot.store import Store, open_database

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class MovableClock(Clock):
    """A clock that stands still until the test moves it."""

    def __init__(self, start: datetime = T0) -> None:
        self.moment = start

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class RecordingChat:
    """Implements ``bot.engine.ports.Chat`` by listing calls as (method, run id, step key)."""

    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    async def run_changed(self, view: RunView) -> None:
        self.calls.append(("run_changed", view.snapshot.run.id, None))

    async def approval_changed(self, view: RunView, step_key: str) -> None:
        self.calls.append(("approval_changed", view.snapshot.run.id, step_key))

    async def alert(self, view: RunView, step_key: str) -> None:
        self.calls.append(("alert", view.snapshot.run.id, step_key))

    async def remind(self, view: RunView, step_key: str) -> None:
        self.calls.append(("remind", view.snapshot.run.id, step_key))

    def literal(self, text: str) -> str:
        return text

    async def notify(
        self, view: RunView, *, channel: str | None, user: str | None, text: str
    ) -> None:
        self.calls.append(("notify", view.snapshot.run.id, None))
        self.texts.append(text)

    def count(self, method: str, step_key: str | None = None) -> int:
        return sum(1 for m, _, key in self.calls if m == method and key == step_key)


def flow(text: str) -> FlowDef:
    return FlowDef.model_validate(yaml.safe_load(text))


ECHO = flow(
    """
name: echo
services: {api: {env: API_URL}}
inputs: {n: {type: integer}}
steps:
  - id: call
    kind: http
    method: POST
    service: api
    path: /echo
    json: {n: "{{ inputs.n }}"}
"""
)
"""One HTTP step posting its input to ``/echo`` of the service at ``API_URL``."""


@dataclass
class Replica:
    """One process's worth of Relay: engine, outbox, operations, over its own pool."""

    engine: Engine
    outbox: Outbox
    operations: Operations
    store: Store
    chat: RecordingChat

    async def settle(self, rounds: int = 50) -> None:
        """Tick and deliver until nothing is in flight (the clock does not move)."""
        for _ in range(rounds):
            await self.engine.drain_flights()
            await self.engine.tick()
            await self.outbox.deliver()
            if not self.engine.in_flight:
                return
            await asyncio.sleep(0)


@asynccontextmanager
async def replica(
    url: str,
    flows: Iterable[FlowDef],
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    directory: Mapping[str, list[str]] | None = None,
    worker_id: str | None = None,
    lease: timedelta = timedelta(seconds=30),
    passive: bool = False,
) -> AsyncIterator[Replica]:
    database = open_database(url)
    chat = RecordingChat()
    try:
        store = Store(database=database)
        async with make_http_client() as client:
            engine = Engine(
                store=store,
                flows={f.name: f for f in flows},
                executors={
                    "http": HttpExecutor(client=client),
                    "notify": NotifyExecutor(chat=chat, store=store),
                },
                environ=dict(environ or {}),
                clock=clock,
                worker_id=worker_id,
                lease=lease,
                passive=passive,
            )
            yield Replica(
                engine=engine,
                outbox=Outbox(
                    store=store, chat=chat, clock=engine.clock, worker_id=engine.worker_id
                ),
                operations=Operations(
                    engine=engine, directory=StaticDirectory(dict(directory or {}))
                ),
                store=store,
                chat=chat,
            )
            await engine.shutdown()
    finally:
        await database.close()
