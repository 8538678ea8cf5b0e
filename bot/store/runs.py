"""The store contract: every query about runs, steps, timers and the outbox.

Callers get frozen records (``bot.engine.records``) and ``OutboxItem``s, never
rows. Reads run in their own short read transaction and take no locks; writes
that belong to an event go through ``transaction()`` and ``Tx``; the few
writes that are not an event (lease renewal, outbox bookkeeping, chat
references) have methods here, each its own write transaction.

The same contract suite runs on SQLite and PostgreSQL
(``tests/integration/store``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from bot.engine.records import Approval, Attempt, AuditEntry, Run, Snapshot, StepRun, Timer
from bot.engine.states import RunState, StepState
from bot.errors import OperationRefused, RunNotFound
from bot.store import outbox as outbox_queries
from bot.store import rows
from bot.store.db import Database
from bot.store.migrate import migrate
from bot.store.outbox import OutboxItem
from bot.store.prepared import Prepared
from bot.store.snapshots import SnapshotCache
from bot.store.tables import (
    approvals,
    attempts,
    audit,
    deliveries,
    outbox,
    runs,
    step_runs,
    timers,
)
from bot.store.tx import Tx, load_snapshot, read_snapshot

MIN_PREFIX = 4
"""Shortest run-id prefix ``find_run`` accepts: shorter ones match too many runs."""

_FINISHED = [state.value for state in RunState if state.finished]
_ATTEMPTS = Prepared(
    sa.select(attempts)
    .where(attempts.c.run_id == sa.bindparam("run_id", type_=sa.String))
    .order_by(attempts.c.started_at, attempts.c.step_key, attempts.c.number)
)
"""A run's attempts in the order they started."""
_NOW = sa.bindparam("now", type_=timers.c.due_at.type)
_LIMIT = sa.bindparam("limit", type_=sa.Integer)
_DUE_TIMERS = Prepared(
    sa.select(timers)
    .where(timers.c.due_at <= _NOW)
    .order_by(timers.c.due_at, timers.c.run_id, timers.c.step_key)
    .limit(_LIMIT)
)
_EXPIRED_LEASES = Prepared(
    sa.select(step_runs)
    .where(step_runs.c.state == StepState.RUNNING.value, step_runs.c.lease_until < _NOW)
    .order_by(step_runs.c.lease_until)
    .limit(_LIMIT)
)
_PATTERN = sa.bindparam("pattern", type_=sa.String)
_OWNERS_LIKE = Prepared(
    sa.union(
        sa.select(step_runs.c.lease_owner).where(
            step_runs.c.state == StepState.RUNNING.value,
            step_runs.c.lease_owner.like(_PATTERN, escape="/"),
        ),
        sa.select(outbox.c.lease_owner).where(outbox.c.lease_owner.like(_PATTERN, escape="/")),
    )
)
"""Lease owners matching a ``LIKE`` pattern (``_starting``): every worker start asks."""
_LEASED_LIKE = Prepared(
    sa.select(step_runs)
    .where(
        step_runs.c.state == StepState.RUNNING.value,
        step_runs.c.lease_owner.like(_PATTERN, escape="/"),
    )
    .order_by(step_runs.c.lease_until)
    .limit(_LIMIT)
)
"""Running steps whose lease owner matches a ``LIKE`` pattern, in the order they lapse."""
_CHILD = runs.alias("child")
_WAITING_CHILDREN = (
    sa.select(_CHILD.c.parent_run_id, _CHILD.c.parent_step_key, _CHILD.c.id)
    .join(
        step_runs,
        sa.and_(
            step_runs.c.run_id == _CHILD.c.parent_run_id,
            step_runs.c.key == _CHILD.c.parent_step_key,
        ),
    )
    .where(step_runs.c.state == StepState.WAITING.value, _CHILD.c.state.in_(_FINISHED))
    .order_by(_CHILD.c.parent_run_id, _CHILD.c.parent_step_key, _CHILD.c.id)
)
_FAMILY = sa.bindparam("family", type_=sa.String)
_COUNT_ALL_OUTBOX = sa.select(sa.func.count()).select_from(outbox)
_COUNT_OUTBOX = Prepared(_COUNT_ALL_OUTBOX)
_COUNT_FAMILY_OUTBOX = Prepared(
    _COUNT_ALL_OUTBOX.where(
        sa.or_(
            outbox.c.run_id == _FAMILY,
            outbox.c.run_id.in_(sa.select(runs.c.id).where(runs.c.parent_run_id == _FAMILY)),
        )
    )
)
"""What the worker loop asks on every turn, built once: building a query cost more
than SQLite's answer to it."""
_ID = sa.bindparam("id", type_=sa.String)
_RUN_BY_ID = Prepared(sa.select(runs).where(runs.c.id == _ID))
_RUNS_BY_PREFIX = (
    sa.select(runs)
    .where(sa.func.substr(runs.c.id, 1, sa.func.length(_ID)) == _ID)
    .order_by(runs.c.id)
    .limit(6)
)
_RETRY_STATES = {"40P01", "40001"}
"""PostgreSQL's deadlock_detected and serialization_failure."""

T = TypeVar("T")


class Store:
    """Runs and everything attached to them, on SQLite or PostgreSQL."""

    def __init__(self, *, database: Database) -> None:
        self.database = database
        self._snapshots = SnapshotCache()

    async def migrate(self) -> None:
        """Bring the schema to head (once, under a lock; a no-op when already there)."""
        await migrate(self.database)

    async def transaction(self, work: Callable[[Tx], T], *, here: bool = False) -> T:
        """Run ``work`` in a write transaction: commits if it returns, rolls back if it raises.

        ``work`` runs on the database's side (a database thread on SQLite), so
        it loads, decides and writes without awaiting anything.

        PostgreSQL may abort one of two transactions that lock the same runs in
        opposite orders (a parent telling its child while the child tells its
        parent); that surfaces as ``OperationRefused``, like the version guard,
        because the remedy is the same: run the event again. ``here``: see
        ``Database.write``.
        """

        def body(conn: sa.Connection) -> tuple[T, Tx]:
            tx = Tx(conn=conn, snapshots=self._snapshots)
            return work(tx), tx

        try:
            result, tx = await self.database.write(body, here=here)
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _RETRY_STATES:
                raise OperationRefused("the run changed underneath; try again") from exc
            raise
        tx.remember()
        return result

    async def get_run(self, run_id: str) -> Run:
        """The run as last committed. Raises ``RunNotFound``."""
        key = {"id": run_id}
        found = await self.database.read(lambda conn: _RUN_BY_ID.mappings(conn, key), here=True)
        if not found:
            raise RunNotFound(f"no run {run_id}", run_id=run_id)
        return rows.run_from(found[0])

    async def snapshot(self, run_id: str) -> Snapshot:
        """The run and its rows as one consistent read, without locking (for display).

        Deciding on it is unsafe: ``Tx.load`` is the locked version.
        """
        return await self.database.read(
            lambda conn: load_snapshot(conn, run_id, lock=False), here=True
        )

    async def snapshots_with_attempts(
        self, run_ids: Collection[str]
    ) -> dict[str, tuple[Snapshot, list[Attempt]]]:
        """``snapshot`` and ``attempts`` of each run, all as one consistent read.

        The outbox renders every run of a batch of messages; one read for the
        batch instead of one per run took a database round trip off each
        message. A snapshot this process committed or read is reused while its
        run's version holds (rendering shows no lease, timer or chat reference, the
        parts that change without one). Runs that do not exist are left out.
        """

        def work(conn: sa.Connection) -> dict[str, tuple[Snapshot, list[Attempt]]]:
            found = {}
            for run_id in dict.fromkeys(run_ids):
                try:
                    snapshot = read_snapshot(conn, run_id, self._snapshots)
                except RunNotFound:
                    continue
                tried = _ATTEMPTS.mappings(conn, {"run_id": run_id})
                found[run_id] = snapshot, [rows.attempt_from(row) for row in tried]
            return found

        # One run's rows are a few small queries; many runs' are not.
        return await self.database.read(work, here=len(run_ids) <= 1)

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        states: Collection[RunState] | None = None,
        started_by: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs matching every filter given, newest first (``created_at``, then id)."""
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if flow is not None:
            query = query.where(runs.c.flow == flow)
        if states is not None:
            query = query.where(runs.c.state.in_([RunState(s).value for s in states]))
        if started_by is not None:
            query = query.where(runs.c.started_by == started_by)
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        return await self.database.read(lambda conn: _all(conn, query, rows.run_from))

    async def find_run(self, prefix: str) -> Run:
        """The run whose id is ``prefix`` or, failing that, the one run whose id starts with it.

        People type the first few characters of an id, so a unique prefix of at
        least ``MIN_PREFIX`` characters is enough. No match, a too-short prefix
        or several matches raise ``RunNotFound``; the message lists candidates.
        """
        prefix = _checked_prefix(prefix)
        return _one_run(prefix, await self.database.read(lambda conn: _runs_by_ref(conn, prefix)))

    async def find_snapshot(self, prefix: str) -> Snapshot:
        """``find_run``, as the whole snapshot; remembered for the transaction that follows.

        A vote reads the run first (the voter's groups are looked up from the
        approval's level), then decides in a write transaction. Remembering what
        this read turns that transaction's load into a version check, which
        takes the five reads off the single writer and puts them on a reader.
        """
        prefix = _checked_prefix(prefix)

        def work(conn: sa.Connection) -> Snapshot | list[Run]:
            try:
                return read_snapshot(conn, prefix, self._snapshots)
            except RunNotFound:
                found = _runs_by_ref(conn, prefix)
            if len(found) != 1:
                return found
            return read_snapshot(conn, found[0].id, self._snapshots)

        found = await self.database.read(work)
        if isinstance(found, list):
            raise _not_one_run(prefix, found)
        self._snapshots.remember(found)
        return found

    async def attempts(self, run_id: str) -> list[Attempt]:
        """Every attempt of every step of the run, in the order they started."""
        key = {"run_id": run_id}
        return await self.database.read(
            lambda conn: [rows.attempt_from(row) for row in _ATTEMPTS.mappings(conn, key)]
        )

    async def audit(self, run_id: str) -> list[AuditEntry]:
        """The run's audit chain in ``seq`` order (verify it with the hashes)."""
        query = sa.select(audit).where(audit.c.run_id == run_id).order_by(audit.c.seq)
        return await self.database.read(lambda conn: _all(conn, query, rows.audit_from))

    async def audited_run_ids(self) -> list[str]:
        """Ids of the runs that have audit entries, sorted (to verify every chain)."""
        query = sa.select(audit.c.run_id).distinct().order_by(audit.c.run_id)
        return await self.database.read(lambda conn: list(conn.execute(query).scalars()))

    async def due_timers(self, now: datetime, limit: int = 200) -> list[Timer]:
        """Timers due at or before ``now``, earliest first. Fire each with ``Tx.take_timer``."""
        key = {"now": now, "limit": limit}
        return await self.database.read(
            lambda conn: list(map(rows.timer_from, _DUE_TIMERS.mappings(conn, key))), here=True
        )

    async def expired_leases(self, now: datetime, limit: int = 200) -> list[StepRun]:
        """Running steps whose lease ended before ``now``: their worker died or hung."""
        key = {"now": now, "limit": limit}
        return await self.database.read(
            lambda conn: list(map(rows.step_from, _EXPIRED_LEASES.mappings(conn, key))), here=True
        )

    async def leased_on(self, host: str, limit: int = 10_000) -> list[StepRun]:
        """Running steps leased to a worker on ``host`` (owner ids start ``host:``).

        Recovery reads these at start: an owner on this host whose process is gone
        died with its attempts, and they can be taken over without waiting for the
        lease to lapse.
        """
        key = {"pattern": _starting(f"{host}:"), "limit": limit}
        return await self.database.read(
            lambda conn: list(map(rows.step_from, _LEASED_LIKE.mappings(conn, key)))
        )

    async def lease_owners_on(self, host: str) -> set[str]:
        """Workers on ``host`` holding a lease on a running step or an outbox row.

        Recovery asks which of them are dead: a worker killed while it held only
        chat messages must have those released too.
        """
        key = {"pattern": _starting(f"{host}:")}
        return await self.database.read(
            lambda conn: {owner for (owner,) in _OWNERS_LIKE.rows(conn, [key])}, here=True
        )

    async def end_leases(self, owners: Collection[str], now: datetime) -> int:
        """End at ``now`` every lease ``owners`` hold; returns how many steps they held.

        Recovery calls this for owners known to be dead, so the machine sees their
        steps' leases lapsed and resumes the attempts at once, and their claimed
        outbox rows go out again, instead of each waiting for its lease to run out.
        A row another worker has taken meanwhile has another owner and is untouched.
        """
        if not owners:
            return 0
        steps = (
            sa.update(step_runs)
            .where(
                step_runs.c.state == StepState.RUNNING.value,
                step_runs.c.lease_owner.in_(list(owners)),
            )
            .values(lease_until=now)
        )
        messages = (
            sa.update(outbox)
            .where(outbox.c.lease_owner.in_(list(owners)))
            .values(lease_owner=None, lease_until=None)
        )

        def work(conn: sa.Connection) -> int:
            ended = int(conn.execute(steps).rowcount)
            conn.execute(messages)
            return ended

        return await self.database.write(work)

    async def renew_leases(
        self, owner: str, keys: Collection[tuple[str, str]], until: datetime
    ) -> set[tuple[str, str]]:
        """Extend ``owner``'s leases on ``keys`` (run id, step key) to ``until``.

        Only rows still ``running`` and still leased to ``owner`` are touched
        (the fence): the result is the keys the owner still holds, and a worker
        must stop any step missing from it, because another worker has it now.
        """
        if not keys:
            return set()
        query = (
            sa.update(step_runs)
            .where(
                sa.tuple_(step_runs.c.run_id, step_runs.c.key).in_(list(keys)),
                step_runs.c.state == StepState.RUNNING.value,
                step_runs.c.lease_owner == owner,
            )
            .values(lease_until=until)
            .returning(step_runs.c.run_id, step_runs.c.key)
        )
        return await self.database.write(
            lambda conn: {(run_id, key) for run_id, key in conn.execute(query)}
        )

    async def runs_in_state(self, states: Collection[RunState], limit: int) -> list[str]:
        """Ids of runs in ``states``, least recently updated first (recovery walks these)."""
        query = (
            sa.select(runs.c.id)
            .where(runs.c.state.in_([RunState(s).value for s in states]))
            .order_by(runs.c.updated_at, runs.c.id)
            .limit(limit)
        )
        return await self.database.read(lambda conn: list(conn.execute(query).scalars()))

    async def pending_approvals(self, *, limit: int = 100) -> list[tuple[Run, StepRun, Approval]]:
        """Undecided approvals with their run and step, oldest request first."""
        query = (
            sa.select(runs, step_runs, approvals)
            .select_from(
                approvals.join(runs, runs.c.id == approvals.c.run_id).join(
                    step_runs,
                    sa.and_(
                        step_runs.c.run_id == approvals.c.run_id,
                        step_runs.c.key == approvals.c.step_key,
                    ),
                )
            )
            .where(approvals.c.state == "pending")
            .order_by(approvals.c.requested_at, approvals.c.run_id, approvals.c.step_key)
            .limit(limit)
        )

        def work(conn: sa.Connection) -> list[tuple[Run, StepRun, Approval]]:
            return [
                (
                    rows.run_from(rows.columns_of(row, runs)),
                    rows.step_from(rows.columns_of(row, step_runs)),
                    rows.approval_from(rows.columns_of(row, approvals)),
                )
                for row in conn.execute(query)
            ]

        return await self.database.read(work)

    async def waiting_children(self) -> list[tuple[str, str, str]]:
        """``(parent_run_id, step_key, child_run_id)`` where a finished child's parent still waits.

        Normally the child's last transition tells its parent in the same
        transaction; this finds the cases where that was lost, so recovery can
        re-emit ``ChildFinished`` (the machine ignores duplicates).
        """
        return await self.database.read(
            lambda conn: [
                (parent, key, child) for parent, key, child in conn.execute(_WAITING_CHILDREN)
            ]
        )

    async def claim_outbox(
        self,
        owner: str,
        now: datetime,
        *,
        limit: int = 50,
        lease: timedelta,
        family: str | None = None,
    ) -> list[OutboxItem]:
        """Lease due outbox rows to ``owner`` until ``now + lease``, oldest first.

        A row is claimable when due and unleased or its lease expired. Two
        concurrent claimers never get the same row. Finish or defer every item
        before the lease ends, or another sender will claim it again. With
        ``family``, only rows of that run and its sub-runs are claimed.
        """
        return await self.database.write(
            lambda conn: outbox_queries.claim(
                conn, owner, now, limit=limit, lease=lease, family=family
            ),
            here=True,
        )

    async def finish_outbox(self, ids: Collection[int]) -> None:
        """Delete delivered outbox rows (unknown ids are ignored)."""
        await self.database.write(lambda conn: outbox_queries.finish(conn, ids), here=True)

    async def defer_outbox(self, item_id: int, *, until: datetime, error: str) -> None:
        """Put a failed delivery back, due at ``until``: ``tries`` goes up, the error is kept."""
        await self.database.write(
            lambda conn: outbox_queries.defer(conn, item_id, until=until, error=error)
        )

    async def set_chat_ref(self, run_id: str, name: str, value: Any) -> None:
        """Set ``runs.chat[name] = value``, keeping the other keys and the version.

        The chat adapter records where it posted (channel, message ts) after
        the fact; bumping the version would make a concurrent transition fail
        its guard for no reason. ``Tx.write`` leaves ``chat`` alone unless the
        machine changed it, so the reference is not lost. Raises ``RunNotFound``.
        """

        def work(conn: sa.Connection) -> None:
            current = conn.execute(
                sa.select(runs.c.chat).where(runs.c.id == run_id).with_for_update()
            ).first()
            if current is None:
                raise RunNotFound(f"no run {run_id}", run_id=run_id)
            chat = {**current.chat, name: value}
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(chat=chat))

        await self.database.write(work)

    async def forget_deliveries(self, *, before: datetime) -> int:
        """Drop delivery ids claimed before ``before``; returns how many.

        Slack re-sends and replays within minutes, so ids older than a day
        guard nothing and would only grow the table.
        """
        query = sa.delete(deliveries).where(deliveries.c.created_at < before)
        return await self.database.write(lambda conn: int(conn.execute(query).rowcount or 0))

    async def count_runs(self, *, states: Collection[RunState] | None = None) -> int:
        """How many runs there are (in ``states``, if given)."""
        query = sa.select(sa.func.count()).select_from(runs)
        if states is not None:
            query = query.where(runs.c.state.in_([RunState(s).value for s in states]))
        return await self.database.read(lambda conn: int(conn.execute(query).scalar_one()))

    async def count_steps(self, *, states: Collection[StepState] | None = None) -> int:
        """How many step rows there are (in ``states``, if given), across all runs."""
        query = sa.select(sa.func.count()).select_from(step_runs)
        if states is not None:
            query = query.where(step_runs.c.state.in_([StepState(s).value for s in states]))
        return await self.database.read(lambda conn: int(conn.execute(query).scalar_one()))

    async def count_outbox(self, *, family: str | None = None) -> int:
        """How many chat effects are not delivered yet, due or deferred (of ``family``)."""
        query, key = (
            (_COUNT_OUTBOX, {}) if family is None else (_COUNT_FAMILY_OUTBOX, {"family": family})
        )
        return await self.database.read(lambda conn: int(query.rows(conn, [key])[0][0]), here=True)


def _starting(prefix: str) -> str:
    """A ``LIKE`` pattern (escape ``/``) for values that start with ``prefix``.

    SQLAlchemy's ``startswith(autoescape=True)`` escapes only a literal value,
    not a bound parameter, and a prepared statement needs the parameter.
    """
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


def _checked_prefix(prefix: str) -> str:
    prefix = prefix.strip()
    if len(prefix) < MIN_PREFIX:
        raise RunNotFound(
            f"type at least {MIN_PREFIX} characters of the run id (got {prefix!r})",
            run_id=prefix,
        )
    return prefix


def _runs_by_ref(conn: sa.Connection, prefix: str) -> list[Run]:
    """The run with id ``prefix``, or else the first few whose id starts with it.

    Buttons and scripts give whole ids: the primary key answers those. For a
    prefix, substr, not LIKE: LIKE ignores case on SQLite but not on
    PostgreSQL, and would need its wildcards escaped.
    """
    key = {"id": prefix}
    exact = _RUN_BY_ID.mappings(conn, key)
    return [rows.run_from(row) for row in exact] or _all(conn, _RUNS_BY_PREFIX, rows.run_from, key)


def _one_run(prefix: str, found: list[Run]) -> Run:
    """The one run ``prefix`` names; ``RunNotFound`` listing candidates otherwise."""
    if len(found) == 1:
        return found[0]
    raise _not_one_run(prefix, found)


def _not_one_run(prefix: str, found: list[Run]) -> RunNotFound:
    """Why ``prefix`` names no run, or several (listing the first few)."""
    if not found:
        return RunNotFound(f"no run id starts with {prefix!r}", run_id=prefix)
    shown = ", ".join(run.id for run in found[:5])
    more = ", …" if len(found) > 5 else ""
    return RunNotFound(
        f"{prefix!r} matches several runs ({shown}{more}); type more of the id",
        run_id=prefix,
        candidates=[run.id for run in found[:5]],
    )


def _all(
    conn: sa.Connection,
    query: sa.Executable,
    record: Callable[[Any], T],
    params: dict[str, Any] | None = None,
) -> list[T]:
    """Every row of ``query`` as a record."""
    return [record(row) for row in conn.execute(query, params).mappings()]
