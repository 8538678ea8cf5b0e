"""The composition root: builds every service from the settings. No logic lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.definitions.loader import Catalog, load_flows
from bot.directory import StaticDirectory
from bot.engine.operations import Operations
from bot.engine.outbox import Outbox
from bot.engine.ports import Chat, Directory
from bot.engine.runner import Clock, Engine
from bot.scheduler import Scheduler
from bot.settings import Settings, environment
from bot.steps.http import HttpExecutor, make_http_client
from bot.steps.notify import NotifyExecutor
from bot.store.db import open_database
from bot.store.runs import Store


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything a command or a request handler may use."""

    settings: Settings
    catalog: Catalog
    store: Store
    engine: Engine
    operations: Operations
    outbox: Outbox
    directory: Directory
    scheduler: Scheduler
    """Flow triggers; only long-running commands start it (``run_worker(scheduler=...)``)."""


@asynccontextmanager
async def build_services(
    settings: Settings,
    *,
    chat: Chat | None = None,
    make_chat: Callable[[Store], Chat] | None = None,
    directory: Directory | None = None,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
    passive: bool = False,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[Services]:
    """Open the database (migrated), load the flows, and assemble the engine around a chat.

    Give ``chat``, or ``make_chat`` for a chat that keeps its message
    references in the store (Slack).
    """
    database = open_database(settings.database_url, synchronous=settings.sqlite_synchronous)
    try:
        await database.check()
        store = Store(database=database)
        await store.migrate()
        if make_chat is not None:
            chat = make_chat(store)
        if chat is None:
            raise TypeError("build_services needs chat= or make_chat=")
        flows = catalog or load_flows(settings.flows_dir)
        directory = directory or StaticDirectory.from_file(settings.directory_file)
        async with make_http_client() as client:
            http = HttpExecutor(
                client=client,
                allow_hosts=settings.http_allow_hosts,
            )
            engine = Engine(
                store=store,
                flows={name: loaded.definition for name, loaded in flows.flows.items()},
                executors={"http": http, "notify": NotifyExecutor(chat=chat, store=store)},
                environ=environ if environ is not None else environment(),
                clock=clock,
                worker_id=settings.worker_id,
                passive=passive,
            )
            yield Services(
                settings=settings,
                catalog=flows,
                store=store,
                engine=engine,
                operations=Operations(engine=engine, directory=directory),
                outbox=Outbox(
                    store=store, chat=chat, clock=engine.clock, worker_id=engine.worker_id
                ),
                directory=directory,
                scheduler=Scheduler(engine=engine),
            )
            await engine.shutdown()
    finally:
        await database.close()
