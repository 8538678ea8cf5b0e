"""The threads SQLite transactions run on, each keeping one connection for its lifetime.

A transaction is handed over through a queue and its result comes back with
``call_soon_threadsafe``. ``loop.run_in_executor`` did the same through a
``concurrent.futures.Future`` chained to an asyncio one, and checking a
connection out of the pool and back in (with the pool's reset on return)
added more: together about a fifth of an engine step (``bench/chain.py``).

A thread runs one transaction at a time, so its connection is never shared;
after a transaction that raised, the connection goes back to the pool, whose
reset on return rolls back whatever is left, and the next one checks out
another.

The writer commits in groups: transactions that queued up while it was busy
run one after another inside one ``BEGIN IMMEDIATE … COMMIT``, each in a
savepoint of its own, and each caller hears back only after that commit. A
transaction that raises rolls back to its savepoint alone. With many callers
at once (votes arriving together, a burst of Slack requests) the commit, the
WAL write of the pages they share and the lock are paid once per group
instead of once per transaction; a lone transaction takes no savepoint.

A caller that knows it is alone (the engine recording the result of its only
step in flight) may ask to run ``here``: on its own thread, at once, when the
writer is idle and nobody is queued. Handing a transaction to the writer and
back cost about a tenth of a chain step (two thread wake-ups on a busy
machine), and a lone transaction has nothing to group with. It never waits
for another process there: the writer's connection keeps ``busy_timeout`` at
0, so its ``BEGIN`` does not wait for the lock, and if the lock is taken the
transaction goes to the writer thread. That thread waits as every connection
does, turning the timeout on for the one ``BEGIN`` that found the lock taken:
setting and clearing it around every ``BEGIN`` cost two statements a
transaction for a case that is rare. Nor does it ever checkpoint there: the
writer's connection does not checkpoint by itself
(``wal_autocheckpoint=0``). A thread of its own, on a connection of its
own, copies the WAL back after every ``CHECKPOINT_EVERY`` commits, and at
most ``IDLE_SECONDS`` after any commit. A checkpoint's writes and fsync take
about 5 ms: on the event loop they stalled it, and on the writer's thread
or connection they held up the next transaction, a chain's next step.

Reads may run ``here`` too, on a connection of the caller's own, when no
reader thread is busy and none is queued. The callers are the store's small
bounded queries (a run's row, due timers, the outbox of one run): the worker
loop asks them between steps, when a hop to a reader thread and back cost
more than the query itself, four or five times over. Under load the threads
are busy and the reads go to them, where SQLite works beside the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import sqlalchemy as sa

log = logging.getLogger("relay.store")

T = TypeVar("T")

CHECKPOINT_EVERY = 100
"""Commits between two checkpoints of the writer (about 1,000 pages at a step's ten)."""

IDLE_SECONDS = 1.0
"""How long after a commit the writer's WAL is checkpointed at the latest."""


@dataclass(frozen=True)
class _Job(Generic[T]):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    work: Callable[[sa.Connection], T]


Outcome = tuple[Any, BaseException | None]
"""A job's result, or the exception it raised."""


def _settle(jobs: list[_Job[Any]], outcomes: list[Outcome]) -> None:
    """Hand each job's outcome to its caller's loop: one wake-up per loop for a whole group."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        by_loop.setdefault(job.loop, []).append((job.future, outcome))
    for loop, settled in by_loop.items():
        # The caller's loop may have closed meanwhile (a CLI command that was
        # interrupted): nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    for future, (result, error) in settled:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class DatabaseThreads:
    """``count`` threads running transactions that begin with ``begin``, first come first served.

    With one thread, transactions run one at a time in the order they were asked for.
    ``group`` is how many queued transactions one commit may carry (see above).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        count: int,
        begin: str,
        name: str,
        group: int = 1,
        writer_wait_ms: int | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        """Threads with their queue; ``writer_wait_ms`` makes the single writer.

        It is how long that thread waits for another process's lock, and
        turns on running lone transactions ``here`` and the writer's own
        checkpoints, after ``checkpoint_every`` commits and at most
        ``idle_seconds`` after the last.
        """
        if writer_wait_ms is not None and count != 1:
            raise ValueError("only a single writer thread can share its connection")
        self._engine = engine
        self._begin = begin
        self._group = group
        self._wait_ms = writer_wait_ms
        self._checkpoint_every = checkpoint_every
        self._idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._drivers: set[sqlite3.Connection] = set()
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        """Held while the writer's connection is in use, by its thread or by a caller ``here``."""
        self._shared: tuple[sa.Connection, sqlite3.Connection] | None = None
        """The writer's connection, once open."""
        self._commits = 0
        """Commits since the writer's last checkpoint."""
        self._checkpointer: tuple[sa.Connection, sqlite3.Connection] | None = None
        """The checkpoint thread's connection, once open."""
        self._checkpoint_asked = threading.Event()
        self._closing = False
        self._busy = 0
        """Reader threads running a transaction now."""
        self._own: tuple[sa.Connection, sqlite3.Connection] | None = None
        self._owning = threading.Lock()
        """Held while a caller reads ``here`` on ``_own``, a reader connection of its own."""
        # Daemon threads: a process that exits without closing the database
        # must not hang on them; an unfinished transaction is rolled back.
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]
        self._checkpoints = (
            threading.Thread(target=self._serve_checkpoints, name=f"{name}-wal", daemon=True)
            if writer_wait_ms is not None
            else None
        )
        for thread in [*self._threads, self._checkpoints]:
            if thread is not None:
                thread.start()

    async def run(self, work: Callable[[sa.Connection], T], *, here: bool = False) -> T:
        """Run ``work`` in a transaction on one of the threads; its result or its exception.

        If the caller is cancelled meanwhile, the transaction still ends as
        ``work`` does: cancellation never leaves half a transaction, nor undoes one.
        ``here``: run it on this thread instead if the threads are free (see above).
        """
        if here and self._queue.empty():
            if self._wait_ms is not None:
                if self._writing.acquire(blocking=False):
                    try:
                        return self._here(work)
                    except _Locked:
                        pass
                    finally:
                        self._writing.release()
            elif not self._busy and self._owning.acquire(blocking=False):
                try:
                    return self._read_here(work)
                finally:
                    self._owning.release()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(loop, future, work))
        return await future

    def drivers(self) -> list[sqlite3.Connection]:
        """The SQLite connections the threads hold now."""
        with self._lock:
            return list(self._drivers)

    def close(self) -> None:
        """Let queued transactions finish, then stop the threads and close their connections."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        if self._checkpoints is not None:
            # After the writer: what it committed last is checkpointed too.
            self._closing = True
            self._checkpoint_asked.set()
            self._checkpoints.join()
        with self._owning:
            if self._own is not None:
                self._release(*self._own)
                self._own = None

    def _here(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` on the writer's connection from the calling thread.

        Raises ``_Locked`` if another process holds the database's write lock.
        """
        try:
            held = self._writer_connection()
            conn, driver = held
            with conn.begin():
                try:
                    driver.execute(self._begin)
                except sqlite3.OperationalError as exc:
                    if _busy(exc):
                        raise _Locked from None
                    raise
                result = work(conn)
        except _Locked:
            raise
        except BaseException:
            self._drop_writer_connection()
            raise
        self._commits += 1
        if self._commits == self._checkpoint_every:
            self._checkpoint_asked.set()
        return result

    def _read_here(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in a read transaction on the caller's own connection."""
        if self._own is None:
            self._own = self._connect()
        conn, driver = self._own
        try:
            with conn.begin():
                driver.execute(self._begin)
                return work(conn)
        except BaseException:
            self._release(conn, driver)
            self._own = None
            raise

    def _writer_connection(self) -> tuple[sa.Connection, sqlite3.Connection]:
        if self._shared is None:
            self._shared = self._connect()
            self._shared[1].execute("PRAGMA wal_autocheckpoint=0")
            self._shared[1].execute("PRAGMA busy_timeout=0")
        return self._shared

    def _drop_writer_connection(self) -> None:
        if self._shared is not None:
            self._release(*self._shared)
            self._shared = None

    def _checkpoint(self) -> None:
        """Copy committed pages from the WAL into the database file, without blocking anyone.

        A passive checkpoint waits for no reader or writer, so the writer's
        connection stays free for the next transaction meanwhile: with the
        checkpoint on it, a chain's next step waited for the fsync.
        """
        if not self._commits:
            return
        # A commit counted while this runs only brings the next checkpoint closer.
        self._commits = 0
        try:
            if self._checkpointer is None:
                self._checkpointer = self._connect(tracked=False)
            self._checkpointer[1].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, sa.exc.DBAPIError):
            log.warning("could not checkpoint the database's WAL", exc_info=True)
            if self._checkpointer is not None:
                self._release(*self._checkpointer)
                self._checkpointer = None

    def _serve(self) -> None:
        if self._wait_ms is not None:
            self._serve_writer()
            return
        held: tuple[sa.Connection, sqlite3.Connection] | None = None
        try:
            while (job := self._queue.get()) is not None:
                jobs, stop = self._queued_after(job)
                with self._lock:
                    self._busy += 1
                try:
                    if held is None:
                        held = self._connect()
                    outcomes = self._transact(held, jobs)
                except BaseException as exc:
                    # Even a failure to connect is the callers' answer: the thread
                    # must live on, or every later transaction would wait for ever.
                    if held is not None:
                        self._release(*held)
                        held = None
                    outcomes = [(None, exc)] * len(jobs)
                finally:
                    with self._lock:
                        self._busy -= 1
                _settle(jobs, outcomes)
                if stop:
                    break
        finally:
            if held is not None:
                self._release(*held)

    def _serve_writer(self) -> None:
        """The writer's loop: its connection is shared with callers running ``here``."""
        try:
            while (job := self._queue.get()) is not None:
                jobs, stop = self._queued_after(job)
                with self._writing:
                    try:
                        outcomes = self._transact(self._writer_connection(), jobs)
                        self._commits += 1
                    except BaseException as exc:
                        self._drop_writer_connection()
                        outcomes = [(None, exc)] * len(jobs)
                _settle(jobs, outcomes)
                if self._commits >= self._checkpoint_every:
                    self._checkpoint_asked.set()
                if stop:
                    break
        finally:
            with self._writing:
                self._drop_writer_connection()

    def _serve_checkpoints(self) -> None:
        """Checkpoint when asked, every ``idle_seconds`` if anything was committed, and at close."""
        try:
            while not self._closing:
                self._checkpoint_asked.wait(self._idle_seconds)
                self._checkpoint_asked.clear()
                self._checkpoint()
        finally:
            # What this process committed goes to the database file before it
            # leaves: another process's writer checkpoints only its own commits.
            self._checkpoint()
            if self._checkpointer is not None:
                self._release(*self._checkpointer)

    def _queued_after(self, job: _Job[Any]) -> tuple[list[_Job[Any]], bool]:
        """``job`` and those queued behind it, up to ``group``; and whether ``close`` was asked."""
        jobs = [job]
        while len(jobs) < self._group:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is None:
                return jobs, True
            jobs.append(queued)
        return jobs, False

    def _transact(
        self, held: tuple[sa.Connection, sqlite3.Connection], jobs: list[_Job[Any]]
    ) -> list[Outcome]:
        """Run ``jobs`` in one transaction; each one's result or exception.

        SQLAlchemy's documented pysqlite recipe for BEGIN, minus its event. The
        driver is left in autocommit mode (see ``db._configure_sqlite``) and
        the BEGIN is sent here, straight to the driver. The recipe sends it from
        an engine ``begin`` event, but any engine-level event puts every
        statement on SQLAlchemy's slower dispatch path: about a fifth of each
        statement's cost. SQLAlchemy still ends the transaction: COMMIT, or
        ROLLBACK if a lone job raises.

        Raises when the transaction as a whole failed (BEGIN, a savepoint,
        COMMIT): then no job's writes were kept.
        """
        conn, driver = held
        with conn.begin():
            self._begin_waiting(driver)
            if len(jobs) == 1:
                return [(jobs[0].work(conn), None)]
            outcomes: list[Outcome] = []
            for job in jobs:
                driver.execute("SAVEPOINT relay_job")
                try:
                    outcomes.append((job.work(conn), None))
                except Exception as exc:
                    driver.execute("ROLLBACK TO relay_job")
                    outcomes.append((None, exc))
                driver.execute("RELEASE relay_job")
            return outcomes

    def _begin_waiting(self, driver: sqlite3.Connection) -> None:
        """``BEGIN``, waiting up to ``writer_wait_ms`` on the writer's connection if it is taken."""
        if self._wait_ms is None:
            driver.execute(self._begin)
            return
        try:
            driver.execute(self._begin)
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        driver.execute(f"PRAGMA busy_timeout={self._wait_ms}")
        try:
            driver.execute(self._begin)
        finally:
            driver.execute("PRAGMA busy_timeout=0")

    def _connect(self, *, tracked: bool = True) -> tuple[sa.Connection, sqlite3.Connection]:
        """A connection from the pool; ``tracked``: listed in ``drivers``, whose statements run."""
        conn = self._engine.connect()
        driver = driver_of(conn)
        if tracked:
            with self._lock:
                self._drivers.add(driver)
        return conn, driver

    def _release(self, conn: sa.Connection, driver: sqlite3.Connection) -> None:
        with self._lock:
            self._drivers.discard(driver)
        try:
            conn.close()
        except Exception:
            log.warning("could not close a database connection", exc_info=True)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether another connection holds what ``exc``'s statement needed, for now.

    The extended codes count too: a connection opening a new WAL file rebuilds
    its index under a lock, and a ``BEGIN`` meanwhile fails with
    ``SQLITE_BUSY_RECOVERY``. Taken for a failure, that made one of two
    replicas starting on a new file together fail its migration.
    """
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


class _Locked(Exception):
    """Another process holds the write lock: the transaction must wait on the writer thread."""


def driver_of(conn: sa.Connection) -> sqlite3.Connection:
    """The SQLite driver's connection under a SQLAlchemy one."""
    return cast(sqlite3.Connection, conn.connection.driver_connection)
