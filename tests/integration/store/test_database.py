"""The engine factory: URLs, SQLite pragmas, write-lock transactions, start-up checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.errors import ConfigError
from bot.store import Database, open_database
from bot.store.db import normalise_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///relay.db", "sqlite+aiosqlite:///relay.db"),
        ("sqlite:////var/lib/relay.db", "sqlite+aiosqlite:////var/lib/relay.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/relay", "postgresql+asyncpg://u:p@db:5432/relay"),
        ("postgres://u@db/relay", "postgresql+asyncpg://u@db/relay"),
        ("postgresql+asyncpg://u@db/relay", "postgresql+asyncpg://u@db/relay"),
    ],
)
def test_urls_get_their_async_driver(url: str, expected: str) -> None:
    assert normalise_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u@db/relay", "postgresql+psycopg2://u@db/relay", "not a url"]
)
def test_unsupported_urls_are_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        open_database(url)
    assert "\n" not in error.value.message


def test_unknown_synchronous_level_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RELAY_SQLITE_SYNCHRONOUS"):
        open_database(f"sqlite:///{tmp_path / 'r.db'}", synchronous="OFF")


async def pragmas(conn: AsyncConnection) -> dict[str, Any]:
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    return {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in names}


@pytest.mark.parametrize(("level", "number"), [("NORMAL", 1), ("full", 2), ("EXTRA", 3)])
async def test_sqlite_pragmas_are_in_force(tmp_path: Path, level: str, number: int) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}", synchronous=level)
    try:
        expected = {"journal_mode": "wal", "synchronous": number, "foreign_keys": 1}
        expected["busy_timeout"] = 5000
        async with database.write() as conn:
            assert await pragmas(conn) == expected
        async with database.read() as conn:
            assert await pragmas(conn) == expected
        await database.check()
    finally:
        await database.close()


async def test_sqlite_writes_take_the_lock_at_begin_and_reads_do_not(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        async with database.write() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        writing = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with database.write() as conn:
                # Only a read so far: a deferred BEGIN would not hold the write lock yet.
                await conn.exec_driver_sql("SELECT count(*) FROM t")
                writing.set()
                await release.wait()
                await conn.exec_driver_sql("INSERT INTO t VALUES (1)")

        async def second() -> None:
            async with database.write() as conn:
                await conn.exec_driver_sql("INSERT INTO t VALUES (2)")

        async with asyncio.timeout(30):
            one = asyncio.create_task(first())
            await writing.wait()
            two = asyncio.create_task(second())
            async with database.read() as conn:
                count = await conn.scalar(sa.text("SELECT count(*) FROM t"))
            assert count == 0, "WAL: reads go on beside a writer"
            await asyncio.sleep(0.3)
            assert not two.done(), "the second writer waits at BEGIN IMMEDIATE"
            release.set()
            await asyncio.gather(one, two)
        async with database.read() as conn:
            rows = (await conn.exec_driver_sql("SELECT n FROM t ORDER BY rowid")).scalars()
            assert list(rows) == [1, 2]
    finally:
        await database.close()


async def unchecked(path: Path, *pragmas: str) -> Database:
    """An engine built without the factory, so ``check()`` has something to refuse."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    return Database(engine=engine, synchronous="NORMAL")


async def test_check_refuses_a_different_synchronous_level(tmp_path: Path) -> None:
    database = await unchecked(
        tmp_path / "r.db", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"
    )
    try:
        with pytest.raises(ConfigError, match="RELAY_SQLITE_SYNCHRONOUS") as error:
            await database.check()
        assert "FULL" in error.value.message and "NORMAL" in error.value.message
    finally:
        await database.close()


async def test_check_refuses_a_journal_that_is_not_wal(tmp_path: Path) -> None:
    database = await unchecked(tmp_path / "r.db", "PRAGMA synchronous=NORMAL")
    try:
        with pytest.raises(ConfigError, match="journal_mode"):
            await database.check()
    finally:
        await database.close()


@pytest.mark.postgres
async def test_check_on_postgres(pg_url: str) -> None:
    database = open_database(pg_url)
    try:
        await database.check()
        assert database.dialect == "postgresql"
        async with database.read() as conn:
            level = await conn.scalar(sa.text("SHOW transaction_isolation"))
        assert level == "read committed"
    finally:
        await database.close()


async def test_check_reports_an_unreachable_server() -> None:
    database = open_database("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(ConfigError, match="does not answer"):
            await database.check()
    finally:
        await database.close()
