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
        self, engine: sa.Engine, *, count: int, begin: str, name: str, group: int = 1
    ) -> None:
        self._engine = engine
        self._begin = begin
        self._group = group
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._drivers: set[sqlite3.Connection] = set()
        self._lock = threading.Lock()
        # Daemon threads: a process that exits without closing the database
        # must not hang on them; an unfinished transaction is rolled back.
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in a transaction on one of the threads; its result or its exception.

        If the caller is cancelled meanwhile, the transaction still ends as
        ``work`` does: cancellation never leaves half a transaction, nor undoes one.
        """
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

    def _serve(self) -> None:
        held: tuple[sa.Connection, sqlite3.Connection] | None = None
        try:
            while (job := self._queue.get()) is not None:
                jobs, stop = self._queued_after(job)
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
                _settle(jobs, outcomes)
                if stop:
                    break
        finally:
            if held is not None:
                self._release(*held)

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
            driver.execute(self._begin)
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

    def _connect(self) -> tuple[sa.Connection, sqlite3.Connection]:
        conn = self._engine.connect()
        driver = driver_of(conn)
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


def driver_of(conn: sa.Connection) -> sqlite3.Connection:
    """The SQLite driver's connection under a SQLAlchemy one."""
    return cast(sqlite3.Connection, conn.connection.driver_connection)
