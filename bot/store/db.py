"""The one place engines are built: SQLite pragmas, PostgreSQL pool, transaction scopes.

Every transaction is a plain function of a synchronous SQLAlchemy
``Connection``, handed to ``Database.write`` or ``Database.read``; the store's
queries are written once and run on both databases:

- SQLite runs through the standard library's driver on threads of its own
  (``bot.store.threads``), each keeping its connection: each transaction is one
  trip to a database thread and back, and the engine's hottest statements skip
  SQLAlchemy's execution wrapping (``bot.store.prepared``). The aiosqlite adapter
  makes three or four trips per statement (cursor, execute, fetch, close), which
  cost more than the statements; and one writer thread queues this process's
  writers first come first served, where SQLite's busy handler would let them
  starve each other. Writers begin with ``BEGIN IMMEDIATE`` (the lock is taken
  up front, so two writers never both read and then collide on upgrade), and WAL
  lets the reader threads run beside the writer.
- PostgreSQL runs on asyncpg through ``AsyncConnection.run_sync``, READ
  COMMITTED, and the store locks run rows with ``SELECT … FOR UPDATE``, which
  SQLAlchemy leaves out on SQLite: one code path for both.

A transaction function must not wait on anything but the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.errors import ConfigError
from bot.store.threads import DatabaseThreads

T = TypeVar("T")

Work = Callable[[sa.Connection], T]
"""A transaction's body: runs inside the transaction, returns what the caller gets."""

SYNCHRONOUS_LEVELS = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}
"""SQLite ``synchronous`` settings Relay accepts, with the number the pragma reads back."""

BUSY_SECONDS = 5.0
"""SQLite ``busy_timeout``: how long a writer waits for another process's lock."""

WRITE_GROUP = 32
"""Most write transactions one SQLite commit carries (``bot.store.threads``)."""

READER_THREADS = 4
"""SQLite reader threads: reads run beside the writer in WAL mode, a few at a time."""

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
_SUPPORTED = {"sqlite+pysqlite", "postgresql+asyncpg"}


def normalise_url(url: str) -> URL:
    """Give a plain ``sqlite://`` or ``postgres(ql)://`` URL the driver Relay uses.

    ``sqlite+aiosqlite`` (which earlier versions used) is read as plain SQLite.
    Anything else is a ``ConfigError``: a synchronous PostgreSQL driver would
    block the event loop.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.drivername in _SUPPORTED:
        return parsed
    if parsed.drivername in _DRIVERS:
        return parsed.set(drivername=_DRIVERS[parsed.drivername])
    raise ConfigError(
        f"DATABASE_URL scheme {parsed.drivername!r} is not supported; "
        "use sqlite:///path.db or postgresql://user@host/db"
    )


class Database:
    """An engine plus the two transaction scopes the store uses.

    Build it with ``open_database``; the constructor takes a ready engine (a
    synchronous one for SQLite, an async one for PostgreSQL) so a test can wrap
    one configured differently and watch ``check()`` refuse it.
    """

    def __init__(self, *, engine: sa.Engine | AsyncEngine, synchronous: str | None = None) -> None:
        self.engine = engine
        self.synchronous = synchronous
        """The SQLite ``synchronous`` level asked for; None on PostgreSQL."""
        self._threads: tuple[DatabaseThreads, DatabaseThreads] | None = None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def url(self) -> URL:
        """The URL the engine connects to."""
        return self.engine.url

    async def write(self, work: Work[T], *, here: bool = False) -> T:
        """Run ``work`` in a write transaction: commits if it returns, rolls back if it raises.

        On SQLite writers run one at a time, in the order they asked, each
        starting with ``BEGIN IMMEDIATE``; a writer of another process holding
        the lock is waited for up to ``busy_timeout``. If the caller is
        cancelled while ``work`` runs, the transaction still ends as ``work``
        does: cancellation never leaves half a transaction, nor does it undo one.
        ``here``: on SQLite, run it on the caller's thread if no other writer is
        running or queued (``bot.store.threads``); a hint, ignored elsewhere.
        """
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            async with engine.begin() as conn:
                return await conn.run_sync(work)
        writer, _ = self._sqlite_threads(engine)
        return await writer.run(work, here=here)

    async def read(self, work: Work[T], *, here: bool = False) -> T:
        """Run ``work`` in a read transaction: one consistent view; never blocks writers (WAL).

        ``here``: on SQLite, run it on the caller's thread if no reader thread is
        busy or queued (``bot.store.threads``); for small bounded queries only,
        since the event loop waits for it. A hint, ignored elsewhere.
        """
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as conn, conn.begin():
                return await conn.run_sync(work)
        _, readers = self._sqlite_threads(engine)
        return await readers.run(work, here=here)

    def driver_connections(self) -> list[sqlite3.Connection]:
        """The SQLite connections the database threads hold now, to trace what they send.

        Statements of ``bot.store.prepared`` go straight to these, past
        SQLAlchemy's events; ``sqlite3.Connection.set_trace_callback`` sees them.
        """
        if self._threads is None:
            return []
        return [driver for threads in self._threads for driver in threads.drivers()]

    def _sqlite_threads(self, engine: sa.Engine) -> tuple[DatabaseThreads, DatabaseThreads]:
        if self._threads is None:
            self._threads = (
                DatabaseThreads(
                    engine,
                    count=1,
                    begin="BEGIN IMMEDIATE",
                    name="relay-db-writer",
                    group=WRITE_GROUP,
                    writer_wait_ms=int(BUSY_SECONDS * 1000),
                ),
                DatabaseThreads(
                    engine, count=READER_THREADS, begin="BEGIN", name="relay-db-reader"
                ),
            )
        return self._threads

    async def check(self) -> None:
        """Fail start-up early if the database does not answer or is set up unsafely.

        On SQLite the journal must be WAL and ``synchronous`` what was asked for
        (a file on a filesystem without shared memory silently stays in another
        journal mode). Raises ``ConfigError``.
        """
        try:
            found = await self.read(_settings)
        except (SQLAlchemyError, OSError) as exc:
            # The driver's own first line says what to fix ("unable to open database
            # file", "Connection refused"); SQLAlchemy's text adds a link to its docs.
            cause = getattr(exc, "orig", None) or exc
            reason = (str(cause).splitlines() or [""])[0] or cause.__class__.__name__
            where = self.url.render_as_string(hide_password=True)
            raise ConfigError(f"the database does not answer ({where}): {reason}") from exc
        if found is None:
            return
        journal, synchronous = found
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
        """Wait for running transactions, stop the database threads, close every connection."""
        threads, self._threads = self._threads, None
        if threads is not None:
            for pool in threads:
                await asyncio.to_thread(pool.close)
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()
        else:
            self.engine.dispose()


def _settings(conn: sa.Connection) -> tuple[Any, Any] | None:
    """SQLite's journal mode and synchronous level; None (after a round trip) elsewhere."""
    if conn.dialect.name != "sqlite":
        conn.execute(sa.text("SELECT 1"))
        return None
    journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    return journal, synchronous


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
        # Connections move between the database threads, one thread at a time:
        # one per reader thread, the writer's, its checkpoints', and the event
        # loop's own reader.
        engine = sa.create_engine(
            parsed,
            echo=echo,
            pool_size=READER_THREADS + 3,
            connect_args={"check_same_thread": False},
        )
        _configure_sqlite(engine, level)
        return Database(engine=engine, synchronous=level)
    async_engine = create_async_engine(
        parsed,
        echo=echo,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
    )
    return Database(engine=async_engine)


def _enter_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL, waiting out a replica that opens a new file at the same moment.

    SQLite answers "database is locked" to this pragma at once, without its busy
    handler, while another connection is switching the same new file.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _configure_sqlite(engine: sa.Engine, synchronous: str) -> None:
    """Pragmas on every new connection; the driver leaves BEGIN to ``DatabaseThreads``."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's legacy mode would BEGIN lazily (and never for SELECT);
        # with None it stays out of the way and the transaction helper decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
            _enter_wal(cursor)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()
