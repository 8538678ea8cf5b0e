"""Lone writes on the caller's thread, and the writer's own checkpoints (SQLite)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.store import Database, open_database
from bot.store.db import BUSY_SECONDS
from bot.store.threads import DatabaseThreads, _busy
from tests.integration.store.test_database import numbers, writer_held


def insert(n: int) -> Callable[[sa.Connection], int]:
    def work(conn: sa.Connection) -> int:
        conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
        return threading.get_ident()

    return work


async def test_a_lone_write_here_runs_on_the_callers_thread(table_t: Database) -> None:
    database = table_t
    loop_thread = threading.get_ident()
    assert await database.write(insert(1), here=True) == loop_thread
    assert await database.write(insert(2)) != loop_thread, "without the hint: the writer thread"
    assert await database.read(numbers) == [1, 2]


async def test_a_write_here_behind_a_running_writer_queues_instead(table_t: Database) -> None:
    database = table_t
    async with asyncio.timeout(30), writer_held(database) as (one, release):
        two = asyncio.create_task(database.write(insert(2), here=True))
        await asyncio.sleep(0.3)
        assert not two.done(), "it waits its turn, and the event loop goes on meanwhile"
        release.set()
        await one
        assert await two != threading.get_ident()
    assert await database.read(numbers) == [1, 2]


async def test_a_write_here_never_waits_for_another_process_on_the_event_loop(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    database, other = open_database(url), open_database(url)
    try:
        await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER)"))
        async with asyncio.timeout(30), writer_held(other) as (one, release):
            two = asyncio.create_task(database.write(insert(2), here=True))
            started = time.monotonic()
            await asyncio.sleep(0.3)
            assert time.monotonic() - started < 0.3 + BUSY_SECONDS / 2, "the loop was not held"
            assert not two.done()
            release.set()
            await one
            assert await two != threading.get_ident(), "it waited on the writer thread"
        assert await database.read(numbers) == [1, 2]
        # The writer waited only for the BEGIN that found the lock taken.
        wait = await database.write(
            lambda conn: conn.exec_driver_sql("PRAGMA busy_timeout").scalar(), here=True
        )
        assert wait == 0
    finally:
        await other.close()
        await database.close()


@pytest.mark.parametrize(
    ("code", "busy"),
    [
        (sqlite3.SQLITE_BUSY, True),
        (sqlite3.SQLITE_BUSY_RECOVERY, True),
        (sqlite3.SQLITE_BUSY_SNAPSHOT, True),
        (sqlite3.SQLITE_LOCKED, False),
        (sqlite3.SQLITE_IOERR_READ, False),
    ],
)
def test_every_kind_of_busy_is_waited_for_and_nothing_else(code: int, busy: bool) -> None:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = code
    assert _busy(error) is busy


async def checkpointed(path: Path, copy: Path, rows: int) -> bool:
    """Whether ``rows`` rows reach the database file itself within ten seconds."""
    for _ in range(200):
        if rows_in_the_file_alone(path, copy) >= rows:
            return True
        await asyncio.sleep(0.05)
    return False


def rows_in_the_file_alone(path: Path, copy: Path) -> int:
    """Rows of ``t`` in the database file without its WAL: what checkpoints copied there."""
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as conn:
        found = conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall()
        return conn.execute("SELECT count(*) FROM t").fetchone()[0] if found else 0


@asynccontextmanager
async def writer_thread(path: Path, **settings: Any) -> AsyncIterator[DatabaseThreads]:
    """A lone writer thread on ``path`` with the table ``t``; ``settings`` as for the class."""
    engine = open_database(f"sqlite:///{path}").engine
    assert isinstance(engine, sa.Engine)
    writer = DatabaseThreads(
        engine, count=1, begin="BEGIN IMMEDIATE", name="test-writer", **settings
    )
    try:
        await writer.run(lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER)"))
        yield writer
    finally:
        writer.close()
        engine.dispose()


async def test_the_writer_checkpoints_after_so_many_commits(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    settings = {"writer_wait_ms": 5000, "checkpoint_every": 10, "idle_seconds": 3600}
    async with writer_thread(path, group=8, **settings) as writer:
        for n in range(8):
            await writer.run(insert(n), here=True)
        assert rows_in_the_file_alone(path, tmp_path / "copy.db") == 0, "all still in the WAL"
        for n in range(8, 20):
            await writer.run(insert(n), here=True)
        assert await checkpointed(path, tmp_path / "copy.db", 9)
        [driver] = writer.drivers()
        assert driver.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)


async def test_commits_on_the_writer_thread_count_towards_a_checkpoint_too(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    settings = {"writer_wait_ms": 5000, "checkpoint_every": 10, "idle_seconds": 3600}
    async with writer_thread(path, **settings) as writer:
        for n in range(12):
            await writer.run(insert(n))
        assert await checkpointed(path, tmp_path / "copy.db", 9)


async def test_checkpoints_never_send_a_write_here_to_the_writer_thread(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    settings = {"writer_wait_ms": 5000, "checkpoint_every": 1, "idle_seconds": 3600}
    async with writer_thread(path, **settings) as writer:
        # Each commit asks for a checkpoint, which runs beside the next write.
        threads = {await writer.run(insert(n), here=True) for n in range(30)}
        assert threads == {threading.get_ident()}
        assert await checkpointed(path, tmp_path / "copy.db", 30)


async def test_the_writer_checkpoints_when_it_falls_idle(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    settings = {"writer_wait_ms": 5000, "checkpoint_every": 1000, "idle_seconds": 0.2}
    async with writer_thread(path, **settings) as writer:
        await writer.run(insert(1), here=True)
        assert await checkpointed(path, tmp_path / "copy.db", 1)


async def test_the_writer_checkpoints_what_it_committed_when_it_closes(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    database = open_database(f"sqlite:///{path}")
    await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER)"))
    # Another process keeps the database open, so closing is not the last
    # connection's close, which would fold the WAL in by itself.
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_OPEN,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await holder.stdout.readline() == b"open\n"
        await database.write(insert(1), here=True)
        assert rows_in_the_file_alone(path, tmp_path / "copy.db") == 0, "only in the WAL"
        await database.close()
        assert rows_in_the_file_alone(path, tmp_path / "copy.db") == 1
    finally:
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), 10)


HOLD_OPEN = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
print("open", flush=True)
sys.stdin.read()
"""
