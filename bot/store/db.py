"""The one place engines are built: SQLite pragmas, PostgreSQL pool, transaction scopes.

SQLite serialises writers with ``BEGIN IMMEDIATE`` (taken up front, so two
writers never both read and then collide on upgrade to a write lock), and WAL
lets readers run beside a writer. PostgreSQL runs READ COMMITTED and the store
locks run rows with ``SELECT … FOR UPDATE``, which SQLAlchemy leaves out on
SQLite: the store has one code path for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.errors import ConfigError

SYNCHRONOUS_LEVELS = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}
"""SQLite ``synchronous`` settings Relay accepts, with the number the pragma reads back."""

_WRITE = "relay_write"
"""Execution option that makes the SQLite ``begin`` hook take the write lock."""

BUSY_SECONDS = 5.0
"""SQLite ``busy_timeout``: how long a writer waits for the database lock."""

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
_ASYNC_DRIVERS = {"sqlite+aiosqlite", "postgresql+asyncpg"}


def normalise_url(url: str) -> URL:
    """Give a plain ``sqlite://`` or ``postgres(ql)://`` URL its async driver.

    URLs that already name a supported async driver pass through; anything else
    is a ``ConfigError``, because a sync driver would block the event loop.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.drivername in _ASYNC_DRIVERS:
        return parsed
    if parsed.drivername in _DRIVERS:
        return parsed.set(drivername=_DRIVERS[parsed.drivername])
    raise ConfigError(
        f"DATABASE_URL scheme {parsed.drivername!r} is not supported; "
        "use sqlite:///path.db or postgresql://user@host/db"
    )


class Database:
    """An async engine plus the two transaction scopes the store uses.

    Build it with ``open_database``; the constructor takes a ready engine so a
    test can wrap one configured differently and watch ``check()`` refuse it.
    """

    def __init__(self, *, engine: AsyncEngine, synchronous: str | None = None) -> None:
        self.engine = engine
        self.synchronous = synchronous
        """The SQLite ``synchronous`` level asked for; None on PostgreSQL."""
        self._writer = engine.execution_options(**{_WRITE: True})
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        """SQLite: one write transaction at a time per event loop (see ``_write_turn``)."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits when the block ends, rolls back if it raises.

        On SQLite it starts with ``BEGIN IMMEDIATE``, so writers queue on the
        database lock (up to ``busy_timeout``) instead of failing mid-transaction.
        """
        async with self._write_turn(), self._writer.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """On SQLite, queue this process's writers in order before they ask for the lock.

        SQLite's busy handler polls with growing sleeps and no order, so dozens of
        concurrent writers in one process starve each other past ``busy_timeout``
        and fail with "database is locked". Waiting here, first come first served,
        leaves the busy handler only other processes to wait for. A writer still
        waiting after ``busy_timeout`` goes on to SQLite, which then decides as
        before (a write opened inside another on the same loop must not hang).
        """
        if self.dialect != "sqlite":
            yield
            return
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = asyncio.Lock()
        acquired = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BUSY_SECONDS):
                acquired = await turn.acquire()
        try:
            yield
        finally:
            if acquired:
                turn.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent view, never blocks writers on SQLite (WAL)."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def check(self) -> None:
        """Fail start-up early if the database does not answer or is set up unsafely.

        On SQLite the journal must be WAL and ``synchronous`` what was asked for
        (a file on a filesystem without shared memory silently stays in another
        journal mode). Raises ``ConfigError``.
        """
        try:
            async with self.read() as conn:
                if self.dialect != "sqlite":
                    await conn.execute(sa.text("SELECT 1"))
                    return
                journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
                synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one()
        except (SQLAlchemyError, OSError) as exc:
            raise ConfigError(f"the database does not answer: {exc.__class__.__name__}") from exc
        if str(journal).lower() != "wal":
            raise ConfigError(
                f"SQLite journal_mode is {journal!r}, not 'wal'; "
                "put the database file on a local filesystem"
            )
        wanted = SYNCHRONOUS_LEVELS.get(self.synchronous or "")
        if synchronous != wanted:
            names = {number: name for name, number in SYNCHRONOUS_LEVELS.items()}
            actual = names.get(synchronous, str(synchronous))
            raise ConfigError(
                f"SQLite synchronous is {actual}, but RELAY_SQLITE_SYNCHRONOUS asks for "
                f"{self.synchronous}"
            )

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def open_database(url: str, *, synchronous: str = "NORMAL", echo: bool = False) -> Database:
    """Build the engine for ``url``; nothing connects until first use (or ``check()``).

    ``synchronous`` only matters for SQLite: NORMAL (fast, may lose the last
    commits on power loss), FULL or EXTRA.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ConfigError(
                f"RELAY_SQLITE_SYNCHRONOUS must be one of {sorted(SYNCHRONOUS_LEVELS)}, "
                f"not {synchronous!r}"
            )
        engine = create_async_engine(parsed, echo=echo)
        _configure_sqlite(engine, level)
        return Database(engine=engine, synchronous=level)
    engine = create_async_engine(
        parsed,
        echo=echo,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
    )
    return Database(engine=engine)


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    """SQLAlchemy's documented aiosqlite recipe: we emit BEGIN, not pysqlite."""

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's legacy mode would BEGIN lazily (and never for SELECT);
        # with None it stays out of the way and the "begin" hook decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
