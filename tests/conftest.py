"""Shared fixtures: one database per backend, so every store test runs on both.

PostgreSQL is real and required: ``RELAY_TEST_PG_URL`` (default the local
server) must answer, or the tests marked ``postgres`` fail. Each test module
gets its own freshly created database (``relay_test_<random>``), dropped after,
so parallel runs never share tables.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.store import Database, Store, open_database
from bot.store.db import normalise_url
from bot.store.tables import metadata

PG_URL = os.environ.get("RELAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

T = TypeVar("T")


def _in_thread(work: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine on a private loop: module fixtures outlive each test's loop."""

    async def main() -> Any:
        return await work()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def elsewhere(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` as another replica: its own ``Database`` on ``url``, loop and thread.

    A transaction's work function cannot await, so a test that holds a transaction
    open blocks its work function on a ``threading.Event``. On PostgreSQL the work
    function runs on its event loop's thread, so that loop must not be the test's.
    """

    async def main() -> T:
        database = open_database(url)
        try:
            return await work(database)
        finally:
            await database.close()

    return await asyncio.to_thread(asyncio.run, main())


def _pg_admin(*statements: str) -> None:
    async def run() -> None:
        engine = create_async_engine(
            normalise_url(PG_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    _in_thread(run)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A database of its own for this test module on the PostgreSQL server."""
    name = f"relay_test_{secrets.token_hex(6)}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is required (RELAY_TEST_PG_URL): {exc}")
    try:
        yield normalise_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database for the backend the test is parametrised with."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


async def _reset_schema(database: Database) -> None:
    if database.dialect == "postgresql":

        def work(conn: sa.Connection) -> None:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")

        await database.write(work)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database (no tables) on each backend."""
    db = open_database(backend_url(request, tmp_path))
    try:
        await _reset_schema(db)
        yield db
    finally:
        await db.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated store with no rows, on each backend.

    PostgreSQL migrates once per module and empties the tables per test.
    """
    db = open_database(backend_url(request, tmp_path))
    try:
        relay = Store(database=db)
        await relay.migrate()
        if db.dialect == "postgresql":
            names = ", ".join(table.name for table in metadata.sorted_tables)
            await db.write(
                lambda conn: conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            )
        yield relay
    finally:
        await db.close()
