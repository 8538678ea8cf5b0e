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
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.store import Database, Store, open_database
from bot.store.db import normalise_url
from bot.store.tables import metadata

PG_URL = os.environ.get("RELAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _in_thread(work: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine on a private loop: module fixtures outlive each test's loop."""

    async def main() -> Any:
        return await work()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


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
        async with database.write() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")


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
            async with db.write() as conn:
                await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        yield relay
    finally:
        await db.close()
