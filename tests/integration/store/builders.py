"""Records with every field set to something a round trip could get wrong."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.engine.events import ChatEffect, Transition
from bot.engine.records import (
    Approval,
    Attempt,
    AuditEntry,
    Run,
    Snapshot,
    StepRun,
    Timer,
    Vote,
)
from bot.engine.states import Decision, RunState, StepState, TimerPurpose
from bot.store import Store
from bot.store.db import READER_THREADS

T0 = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
"""Microseconds on purpose: both backends must keep them."""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_id() -> str:
    return secrets.token_hex(8)


def make_run(run_id: str | None = None, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": run_id or new_id(),
        "flow": "deploy",
        "definition": {"name": "deploy", "steps": [{"id": "fetch", "kind": "http"}]},
        "definition_hash": "d" * 64,
        "state": RunState.RUNNING,
        "inputs": {"env": "prod", "count": 3, "tags": ["a", "b"], "nested": {"ok": True}},
        "started_by": "U123",
        "source": {"channel": "C1", "thread": None},
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Run(**values)


def make_step(run_id: str, key: str = "fetch", **fields: Any) -> StepRun:
    values: dict[str, Any] = {
        "run_id": run_id,
        "key": key,
        "step_id": key.split("[")[0],
        "kind": "http",
        "state": StepState.RUNNING,
        "attempt": 1,
        "started_at": at(1),
        "lease_owner": "host:1",
        "lease_until": at(31),
        "detail": {"idempotency_key": f"{run_id}:{key}"},
    }
    values.update(fields)
    return StepRun(**values)


def make_attempt(run_id: str, key: str = "fetch", number: int = 1, **fields: Any) -> Attempt:
    return Attempt(run_id=run_id, step_key=key, number=number, started_at=at(number), **fields)


def make_approval(run_id: str, key: str = "ok", **fields: Any) -> Approval:
    values: dict[str, Any] = {"run_id": run_id, "step_key": key, "requested_at": at(2)}
    values.update(fields)
    return Approval(**values)


def make_vote(run_id: str, voter: str, key: str = "ok", **fields: Any) -> Vote:
    values: dict[str, Any] = {
        "run_id": run_id,
        "step_key": key,
        "voter": voter,
        "decision": Decision.APPROVED,
        "level": 0,
        "at": at(3),
    }
    values.update(fields)
    return Vote(**values)


def make_timer(
    run_id: str, key: str = "fetch", purpose: TimerPurpose = TimerPurpose.RETRY, due: float = 60
) -> Timer:
    return Timer(run_id=run_id, step_key=key, purpose=purpose, due_at=at(due))


def make_audit(run_id: str, seq: int, **fields: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "run_id": run_id,
        "seq": seq,
        "at": at(seq),
        "actor": "U123",
        "action": "step.started",
        "detail": {"key": "fetch"},
        "prev_hash": f"{seq - 1:064x}",
        "hash": f"{seq:064x}",
    }
    values.update(fields)
    return AuditEntry(**values)


def effect(run_id: str, kind: str = "run", **fields: Any) -> ChatEffect:
    return ChatEffect(kind=kind, run_id=run_id, **fields)


def next_transition(before: Snapshot, *, now: float = 10, **fields: Any) -> Transition:
    """A transition as the machine makes one: the run's version moves on by one."""
    run_fields: dict[str, Any] = {"version": before.run.version + 1, "updated_at": at(now)}
    run_fields.update(fields.pop("run_fields", {}))
    run = replace(before.run, **run_fields)
    return Transition(run=run, **fields)


async def connect_every_reader(store: Store) -> None:
    """Make each SQLite reader thread hold its connection, so ``statements_sent`` sees all reads."""
    if store.database.dialect != "sqlite":
        return
    together = threading.Barrier(READER_THREADS)
    reads = [store.database.read(lambda _: together.wait(10)) for _ in range(READER_THREADS)]
    await asyncio.gather(*reads)


@contextmanager
def driver_trace(store: Store, trace: Callable[[str], None]) -> Iterator[None]:
    """Call ``trace`` with each statement the store's SQLite connections send, on their thread.

    The database threads must have run a transaction already, so that their
    connections are held.
    """
    drivers = store.database.driver_connections()
    assert drivers, "no database thread holds a connection yet"
    for driver in drivers:
        driver.set_trace_callback(trace)
    try:
        yield
    finally:
        for driver in drivers:
            driver.set_trace_callback(None)


@contextmanager
def statements_sent(store: Store) -> Iterator[list[str]]:
    """The SQL statements ``store`` sends while the block runs, first word upper-cased.

    On SQLite the driver's own trace sees every statement, the prepared ones
    that pass SQLAlchemy by included; the database threads must have run a
    transaction already, so that their connections are held. Transactions
    begin and end straight on the driver, so BEGIN and COMMIT are not listed.
    """
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2].split()[0].upper())

    def trace(sql: str) -> None:
        word = sql.split()[0].upper()
        if word not in ("BEGIN", "COMMIT", "ROLLBACK"):
            sent.append(word)

    engine = store.database.engine
    if isinstance(engine, sa.Engine):
        with driver_trace(store, trace):
            yield sent
        return
    sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
