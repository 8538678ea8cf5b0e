"""Small reads on the caller's thread while the reader threads are idle (SQLite)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from bot.store import Database
from tests.integration.store.test_database import numbers


def where_read(conn: sa.Connection) -> tuple[int, list[int]]:
    return threading.get_ident(), numbers(conn)


async def test_a_read_here_runs_on_the_callers_thread_when_the_readers_are_idle(
    table_t: Database,
) -> None:
    database = table_t
    await database.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
    loop_thread = threading.get_ident()
    assert await database.read(where_read, here=True) == (loop_thread, [1])
    thread, _ = await database.read(where_read)
    assert thread != loop_thread, "without the hint: a reader thread"


async def test_a_read_here_sees_what_was_committed_after_its_last_read(table_t: Database) -> None:
    database = table_t
    for n in range(1, 4):
        await database.write(lambda conn, n=n: conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})"))
        _, seen = await database.read(where_read, here=True)
        assert seen == list(range(1, n + 1)), "each read is a transaction of its own"


async def test_a_read_here_goes_to_a_thread_while_a_reader_is_busy(table_t: Database) -> None:
    database = table_t
    reading, release = threading.Event(), threading.Event()

    def slow(conn: sa.Connection) -> None:
        numbers(conn)
        reading.set()
        assert release.wait(timeout=20), "never released"

    held = asyncio.create_task(database.read(slow))
    try:
        assert await asyncio.to_thread(reading.wait, 20)
        thread, _ = await database.read(where_read, here=True)
        assert thread != threading.get_ident(), "a busy reader means load: the threads take it"
    finally:
        release.set()
        await held


async def test_a_read_here_that_raises_leaves_the_next_one_working(table_t: Database) -> None:
    database = table_t

    def broken(conn: sa.Connection) -> object:
        return conn.exec_driver_sql("SELECT nope")

    with pytest.raises(sa.exc.OperationalError):
        await database.read(broken, here=True)
    assert await database.read(where_read, here=True) == (threading.get_ident(), [])
