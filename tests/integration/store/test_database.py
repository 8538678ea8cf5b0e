"""The engine factory: URLs, SQLite pragmas, write-lock transactions, start-up checks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.errors import ConfigError
from bot.store import Database, open_database
from bot.store.db import normalise_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///relay.db", "sqlite+pysqlite:///relay.db"),
        ("sqlite:////var/lib/relay.db", "sqlite+pysqlite:////var/lib/relay.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite:///x.db"),
        ("postgresql://u:p@db:5432/relay", "postgresql+asyncpg://u:p@db:5432/relay"),
        ("postgres://u@db/relay", "postgresql+asyncpg://u@db/relay"),
        ("postgresql+asyncpg://u@db/relay", "postgresql+asyncpg://u@db/relay"),
    ],
)
def test_urls_get_the_driver_relay_uses(url: str, expected: str) -> None:
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


def pragmas(conn: sa.Connection) -> dict[str, Any]:
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}


@pytest.mark.parametrize(("level", "number"), [("NORMAL", 1), ("full", 2), ("EXTRA", 3)])
async def test_sqlite_pragmas_are_in_force(tmp_path: Path, level: str, number: int) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}", synchronous=level)
    try:
        assert isinstance(database.engine, sa.Engine)
        assert database.url.drivername == "sqlite+pysqlite"
        expected = {"journal_mode": "wal", "synchronous": number, "foreign_keys": 1}
        # The writer asks for the lock without waiting, and waits only when it is
        # taken (tests/integration/store/test_write_here.py).
        assert await database.write(pragmas) == {**expected, "busy_timeout": 0}
        assert await database.read(pragmas) == {**expected, "busy_timeout": 5000}
        await database.check()
    finally:
        await database.close()


def numbers(conn: sa.Connection) -> list[int]:
    return list(conn.exec_driver_sql("SELECT n FROM t ORDER BY rowid").scalars())


@asynccontextmanager
async def writer_held(
    database: Database,
) -> AsyncIterator[tuple[asyncio.Task[None], threading.Event]]:
    """A write transaction that has begun and only read; it writes 1 once the event is set.

    Yields the transaction's task and the event; leaving the block sets the event.
    """
    writing, release = threading.Event(), threading.Event()

    def work(conn: sa.Connection) -> None:
        # Only a read so far: a deferred BEGIN would not hold the write lock yet.
        conn.exec_driver_sql("SELECT count(*) FROM t")
        writing.set()
        assert release.wait(timeout=20), "never released"
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")

    task = asyncio.create_task(database.write(work))
    try:
        assert await asyncio.to_thread(writing.wait, 20)
        yield task, release
    finally:
        release.set()


async def test_sqlite_writes_take_the_lock_at_begin_and_reads_do_not(table_t: Database) -> None:
    database = table_t
    async with asyncio.timeout(30), writer_held(database) as (one, release):
        two = asyncio.create_task(
            database.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
        )
        count = await database.read(lambda conn: conn.scalar(sa.text("SELECT count(*) FROM t")))
        assert count == 0, "WAL: reads go on beside a writer"
        await asyncio.sleep(0.3)
        assert not two.done(), "the second writer waits for the first"
        release.set()
        await asyncio.gather(one, two)
    assert await database.read(numbers) == [1, 2]


async def test_sqlite_writers_of_another_database_wait_at_begin_immediate(tmp_path: Path) -> None:
    # Another process has a writer thread of its own: only SQLite's lock keeps it out.
    url = f"sqlite:///{tmp_path / 'r.db'}"
    database = open_database(url)
    other = open_database(url)
    begun = threading.Event()

    def second(conn: sa.Connection) -> None:
        begun.set()
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")

    try:
        await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER)"))
        async with asyncio.timeout(30), writer_held(database) as (one, release):
            two = asyncio.create_task(other.write(second))
            count = await other.read(lambda conn: conn.scalar(sa.text("SELECT count(*) FROM t")))
            assert count == 0, "WAL: reads go on beside a writer"
            await asyncio.sleep(0.3)  # well inside the busy timeout
            assert not begun.is_set(), "the other writer waits at BEGIN IMMEDIATE"
            assert not two.done()
            release.set()
            await asyncio.gather(one, two)
        assert begun.is_set()
        assert await other.read(numbers) == [1, 2]
    finally:
        await other.close()
        await database.close()


async def unchecked(path: Path, *pragmas: str) -> Database:
    """An engine built without the factory, so ``check()`` has something to refuse."""
    engine = sa.create_engine(
        f"sqlite+pysqlite:///{path}", connect_args={"check_same_thread": False}
    )

    @sa.event.listens_for(engine, "connect")
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
        level = await database.read(lambda conn: conn.scalar(sa.text("SHOW transaction_isolation")))
        assert level == "read committed"
    finally:
        await database.close()


async def test_check_reports_an_unreachable_server() -> None:
    database = open_database("postgresql://postgres:hunter2@127.0.0.1:1/nothing")
    try:
        with pytest.raises(ConfigError, match="does not answer") as error:
            await database.check()
        message = error.value.user_message
        assert "127.0.0.1:1/nothing" in message
        assert "[Errno 111]" in message  # ECONNREFUSED, in the driver's words
        assert "hunter2" not in message
    finally:
        await database.close()


async def test_a_cancelled_caller_does_not_undo_its_transaction(table_t: Database) -> None:
    database = table_t
    async with asyncio.timeout(30), writer_held(database) as (caller, release):
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        # Writers queue in order: once the next one is done, the first has committed.
        await database.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
    assert await database.read(numbers) == [1, 2]


async def test_a_failed_transaction_leaves_nothing_and_the_next_one_runs(table_t: Database) -> None:
    def fails(conn: sa.Connection) -> None:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await table_t.write(fails)
    await table_t.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
    assert await table_t.read(numbers) == [2]


async def test_writes_queued_together_commit_together_each_in_its_savepoint(
    table_t: Database,
) -> None:
    def inserts(n: int, *, then: str | None = None) -> Callable[[sa.Connection], int]:
        def work(conn: sa.Connection) -> int:
            conn.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
            if then == "raise":
                raise RuntimeError(f"job {n} failed")
            if then == "bad sql":
                conn.exec_driver_sql("INSERT INTO nowhere VALUES (1)")
            return n

        return work

    sent: list[str] = []
    async with asyncio.timeout(30), writer_held(table_t) as (held, release):
        (driver,) = [d for d in table_t.driver_connections() if d.in_transaction]
        queued = [
            asyncio.create_task(table_t.write(job))
            for job in (
                inserts(2),
                inserts(3, then="raise"),
                inserts(4, then="bad sql"),
                inserts(5),
            )
        ]
        await asyncio.sleep(0)  # each task queues its job before it first awaits
        driver.set_trace_callback(lambda sql: sent.append(sql.split()[0]))
        release.set()
        outcomes = await asyncio.gather(held, *queued, return_exceptions=True)
        driver.set_trace_callback(None)
    assert outcomes[0] is None and outcomes[1] == 2 and outcomes[4] == 5
    assert isinstance(outcomes[2], RuntimeError)
    assert isinstance(outcomes[3], sa.exc.OperationalError), "a failed statement spoils nothing"
    assert await table_t.read(numbers) == [1, 2, 5]
    # The held transaction commits alone; the four queued behind it share one commit.
    assert sent.count("BEGIN") == 1 and sent.count("COMMIT") == 2
    assert sent.count("SAVEPOINT") == 4 and sent.count("ROLLBACK") == 2


async def test_a_failed_commit_fails_every_write_of_its_group(table_t: Database) -> None:
    for ddl in (
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (parent INTEGER REFERENCES parent DEFERRABLE INITIALLY DEFERRED)",
    ):
        await table_t.write(lambda conn, ddl=ddl: conn.exec_driver_sql(ddl))
    async with asyncio.timeout(30), writer_held(table_t) as (held, release):
        fine = asyncio.create_task(
            table_t.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
        )
        # Checked only at COMMIT: the savepoint is released without complaint.
        orphan = asyncio.create_task(
            table_t.write(lambda conn: conn.exec_driver_sql("INSERT INTO child VALUES (99)"))
        )
        await asyncio.sleep(0)
        release.set()
        outcomes = await asyncio.gather(held, fine, orphan, return_exceptions=True)
    assert outcomes[0] is None
    assert all(isinstance(outcome, sa.exc.IntegrityError) for outcome in outcomes[1:])
    assert await table_t.read(numbers) == [1], "no write of the failed group was kept"
    await table_t.write(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (3)"))
    assert await table_t.read(numbers) == [1, 3]


async def test_the_database_threads_keep_their_connections(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        first = await database.write(lambda conn: id(conn.connection.driver_connection))
        again = await database.write(lambda conn: id(conn.connection.driver_connection))
        assert first == again
        assert first in {id(driver) for driver in database.driver_connections()}
    finally:
        await database.close()
    assert database.driver_connections() == []


async def test_a_database_that_cannot_be_opened_fails_each_call_instead_of_hanging(
    tmp_path: Path,
) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'missing' / 'r.db'}")
    try:
        async with asyncio.timeout(10):
            for _ in range(2):
                with pytest.raises(sa.exc.OperationalError):
                    await database.write(lambda conn: conn.exec_driver_sql("SELECT 1"))
            with pytest.raises(ConfigError, match="does not answer") as error:
                await database.check()
            assert error.value.user_message.endswith(": unable to open database file")
    finally:
        await database.close()
