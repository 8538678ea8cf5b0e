"""The write transaction the engine applies one event in: lock, load, write.

The runner's loop is ``load`` (locks the run row) → ``machine.decide`` (pure) →
``write`` (every row the transition changed, in a handful of batched
statements) → commit. Side effects only start after the commit, from the
outbox rows and executions the transition named.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bot.engine.events import COLLAPSIBLE, Transition
from bot.engine.move import applied
from bot.engine.records import Run, Snapshot
from bot.engine.states import TimerPurpose
from bot.errors import OperationRefused, RunNotFound
from bot.store import rows
from bot.store.prepared import Prepared
from bot.store.snapshots import SnapshotCache
from bot.store.tables import (
    approvals,
    attempts,
    audit,
    deliveries,
    outbox,
    runs,
    schedule_fires,
    step_runs,
    timers,
    votes,
)


def dialect_insert(conn: sa.Connection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that knows ``ON CONFLICT`` for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_UPSERTS: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Prepared] = {}
"""Built upsert statements by dialect, table, columns and kept columns.

Building one (``excluded`` and the ``SET`` clause) costs more than running it;
a statement object is immutable and memoizes its cache key, so each shape is
built once per process and reused by every transition.
"""


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    records: Sequence[rows.Record],
    *,
    keep: Collection[str] = (),
) -> None:
    """Write ``records`` in one batched statement, overwriting rows whose primary key exists.

    Columns in ``keep`` are written only by the insert: an attempt's ``started_at``
    is set when it starts and must survive the update that records its end.
    """
    if not records:
        return
    names, values = rows.values_of(records)
    shape = (conn.dialect.name, table.name, names, tuple(keep))
    statement = _UPSERTS.get(shape)
    if statement is None:
        insert = dialect_insert(conn, table)
        keys = [column.name for column in table.primary_key.columns]
        statement = _UPSERTS[shape] = Prepared(
            insert.on_conflict_do_update(
                index_elements=keys,
                set_={
                    name: insert.excluded[name]
                    for name in names
                    if name not in keys and name not in keep
                },
            )
        )
    statement.execute_rows(conn, names, values)


_RUN_ID = sa.bindparam("run_id", type_=sa.String)
_RUN = sa.select(runs).where(runs.c.id == _RUN_ID)
_RUNS = {False: Prepared(_RUN), True: Prepared(_RUN.with_for_update())}
_VERSION = sa.select(runs.c.version).where(runs.c.id == _RUN_ID)
_VERSIONS = {False: Prepared(_VERSION), True: Prepared(_VERSION.with_for_update())}
_STEPS = Prepared(
    sa.select(step_runs).where(step_runs.c.run_id == _RUN_ID).order_by(step_runs.c.key)
)
_APPROVALS = Prepared(sa.select(approvals).where(approvals.c.run_id == _RUN_ID))
_VOTES = Prepared(
    sa.select(votes)
    .where(votes.c.run_id == _RUN_ID)
    .order_by(votes.c.at, votes.c.step_key, votes.c.voter)
)
_TIMERS = Prepared(sa.select(timers).where(timers.c.run_id == _RUN_ID).order_by(timers.c.due_at))
"""The snapshot's queries, built once: every event loads a snapshot, often twice."""

_UPDATE_RUN = Prepared(
    sa.update(runs).where(
        runs.c.id == sa.bindparam("guard_id"), runs.c.version == sa.bindparam("guard_version")
    )
)
"""The versioned run update; its ``SET`` holds the columns of the parameters given."""
_INSERT_RUN = Prepared(sa.insert(runs))
_INSERT_AUDIT = Prepared(sa.insert(audit))
_INSERT_OUTBOX = Prepared(sa.insert(outbox))
_PENDING = Prepared(
    sa.select(outbox.c.id)
    .where(
        outbox.c.run_id == sa.bindparam("run_id"),
        outbox.c.kind == sa.bindparam("kind"),
        outbox.c.step_key == sa.bindparam("step_key"),
        outbox.c.lease_owner.is_(None),
        outbox.c.tries == 0,
    )
    .limit(1)
    .with_for_update()
)
"""A fresh outbox row for one target that no sender has claimed yet."""
_CLEAR_TIMER = Prepared(
    sa.delete(timers).where(
        timers.c.run_id == sa.bindparam("r"),
        timers.c.step_key == sa.bindparam("k"),
        timers.c.purpose == sa.bindparam("p"),
    )
)


def load_snapshot(conn: sa.Connection, run_id: str, *, lock: bool) -> Snapshot:
    """Read one run and every row the machine needs; ``lock`` takes the run row's lock."""
    key = {"run_id": run_id}
    found = _RUNS[lock].mappings(conn, key)
    if not found:
        raise RunNotFound(f"no run {run_id}", run_id=run_id)
    return Snapshot(
        run=rows.run_from(found[0]),
        steps={step.key: step for step in map(rows.step_from, _STEPS.mappings(conn, key))},
        approvals={a.step_key: a for a in map(rows.approval_from, _APPROVALS.mappings(conn, key))},
        votes=tuple(map(rows.vote_from, _VOTES.mappings(conn, key))),
        timers=tuple(map(rows.timer_from, _TIMERS.mappings(conn, key))),
    )


def read_snapshot(conn: sa.Connection, run_id: str, snapshots: SnapshotCache) -> Snapshot:
    """``load_snapshot`` without the lock, from ``snapshots`` while the run's version holds.

    For rendering a run's messages and for what a vote looks up first. A
    remembered snapshot may hold leases, timers and chat references older than
    the rows (see ``bot.store.snapshots``): no message shows those, and the
    vote's own transaction checks the version again under the lock and decides
    as ``Tx.load`` would. Checking the version is one small query instead of
    the snapshot's five.
    """
    cached = snapshots.get(run_id)
    if cached is not None and _still_current(conn, cached, lock=False):
        return cached
    return load_snapshot(conn, run_id, lock=False)


def _still_current(conn: sa.Connection, snapshot: Snapshot, *, lock: bool) -> bool:
    found = _VERSIONS[lock].rows(conn, [{"run_id": snapshot.run.id}])
    return bool(found) and found[0][0] == snapshot.run.version


class Tx:
    """One write transaction, opened by ``Store.transaction()``; commits when the block ends.

    Everything done through one ``Tx`` commits or rolls back together. On
    PostgreSQL the run rows it ``load``s stay locked until then; on SQLite the
    whole database is (``BEGIN IMMEDIATE``), so keep transactions short and
    never the network inside one.
    """

    def __init__(self, *, conn: sa.Connection, snapshots: SnapshotCache | None = None) -> None:
        self.conn = conn
        self._snapshots = snapshots
        self.seen: dict[str, Snapshot] = {}
        """The newest snapshot of each run this transaction read afresh or wrote (after
        ``write``, the run as it now stands), remembered once it commits and never
        before: a rolled-back write must not be trusted."""
        self._trusting = conn.dialect.name == "sqlite"
        """Whether a remembered snapshot is used unchecked (see ``load``)."""
        self._unchecked: set[str] = set()
        """Runs ``load`` answered from memory without checking their version."""

    def insert_run(self, run: Run) -> None:
        """Insert a new run row (no steps yet: ``StartRun`` creates them).

        A run id that exists already is an ``IntegrityError``: ids are random,
        so that means a bug, not a race to hide.
        """
        _INSERT_RUN.execute(self.conn, [rows.to_row(run)])
        self.seen[run.id] = Snapshot(run=run, steps={})

    def load(self, run_id: str, *, fresh: bool = False) -> Snapshot:
        """The run and its steps, approvals, votes and timers, with the run row locked.

        Every writer of a run's rows loads it first, so writers of one run
        queue here (``FOR UPDATE`` on PostgreSQL). A run this transaction
        inserted, read or wrote already is answered from memory, and a snapshot
        this process committed or read is reused while the run's version has not
        moved; ``fresh`` reads everything, for events that judge leases or
        timers, which change without a new version. Raises ``RunNotFound``.

        On SQLite a remembered snapshot is not even checked here: this
        transaction holds the database's write lock, so only another process
        can have moved the run, and then ``write`` finds the version moved and
        refuses. A decision that writes nothing must ask ``confirmed`` first.
        """
        if not fresh and run_id in self.seen:
            return self.seen[run_id]
        cached = None if fresh or self._snapshots is None else self._snapshots.get(run_id)
        if cached is not None and self._trusting:
            self._unchecked.add(run_id)
            return cached
        if cached is not None and _still_current(self.conn, cached, lock=True):
            return cached
        snapshot = load_snapshot(self.conn, run_id, lock=True)
        self.seen[run_id] = snapshot
        return snapshot

    def confirmed(self, snapshot: Snapshot) -> bool:
        """Whether ``snapshot``, from ``load``, is still the run's rows.

        Only a snapshot ``load`` answered unchecked costs a query: the version
        check it skipped. A decision that changes nothing is made on rows
        confirmed this way, or made again on fresh ones.
        """
        run_id = snapshot.run.id
        if run_id not in self._unchecked:
            return True
        self._unchecked.discard(run_id)
        return _still_current(self.conn, snapshot, lock=True)

    def write(self, before: Snapshot, transition: Transition) -> None:
        """Write what ``transition`` changed, its chat effects as outbox rows included.

        Invariants:

        - The run row is updated only if its version is still
          ``before.run.version``; otherwise ``OperationRefused`` and nothing is
          written (the transaction should be rolled back and the event retried).
          The machine increments the version, so a stale writer always misses.
        - ``runs.chat`` is overwritten only if the machine changed it: chat
          references arrive through ``Store.set_chat_ref`` without a version bump
          and must survive transitions decided on an older copy.
        - Cleared timers are deleted before new ones are set, so a timer that is
          cleared and set again in one transition ends up set.
        - Outbox rows are due at ``transition.run.updated_at``: the machine's
          clock, not the wall clock, so tests with a fake clock see them due.
        - A status or approval effect (``COLLAPSIBLE``) adds no row when one for
          the same target already waits unclaimed: a chain of quick steps
          wrote, claimed and deleted a row per step for one message edit.
        - Nothing happens when ``transition.changed`` is False.

        A typical transition (run, one step, one attempt, one audit entry, one
        status edit) costs six statements, five when the edit already waits;
        each further kind of row adds one, however many rows of that kind there
        are.
        """
        if not transition.changed:
            return
        run = transition.run
        if run.id != before.run.id or run.version <= before.run.version:
            raise ValueError(
                f"transition for run {run.id} v{run.version} does not follow "
                f"run {before.run.id} v{before.run.version}"
            )
        # Only the columns that changed: the version guard proves the row still
        # equals ``before.run`` (bar ``chat``), and rewriting the definition on every
        # transition would cost more than the rest of the update.
        values = rows.changed_columns(before.run, run)
        changed = _UPDATE_RUN.execute(
            self.conn, [{**values, "guard_id": run.id, "guard_version": before.run.version}]
        )
        if changed != 1:
            # Whatever this process remembered of the run is older than its rows.
            if self._snapshots is not None:
                self._snapshots.forget(run.id, stale=before.run.version)
            raise OperationRefused("the run changed underneath; try again", run_id=run.id)
        if transition.new_runs:
            _INSERT_RUN.execute(self.conn, [rows.to_row(r) for r in transition.new_runs])
            self.seen.update({r.id: Snapshot(run=r, steps={}) for r in transition.new_runs})
        upsert(self.conn, step_runs, transition.steps)
        upsert(self.conn, attempts, transition.attempts, keep=("started_at",))
        upsert(self.conn, approvals, transition.approvals)
        upsert(self.conn, votes, transition.votes)
        self._clear_timers(run.id, transition.timers_cleared)
        upsert(self.conn, timers, transition.timers_set)
        if transition.audit:
            _INSERT_AUDIT.execute_rows(self.conn, *rows.values_of(transition.audit))
        self.seen[run.id] = applied(before, transition)
        self._add_outbox(transition, run.updated_at)

    def remember(self) -> None:
        """Called once the transaction committed: keep what it saw for the next event."""
        if self._snapshots is not None:
            for snapshot in self.seen.values():
                self._snapshots.remember(snapshot)

    def _clear_timers(self, run_id: str, cleared: Iterable[tuple[str, TimerPurpose]]) -> None:
        params = [
            {"r": run_id, "k": key, "p": TimerPurpose(purpose).value} for key, purpose in cleared
        ]
        _CLEAR_TIMER.execute(self.conn, params)

    def _add_outbox(self, transition: Transition, now: datetime) -> None:
        rows = []
        kept: set[tuple[str, str, str]] = set()
        for effect in transition.chat:
            target = (effect.run_id, effect.kind, effect.step_key)
            if effect.kind in COLLAPSIBLE:
                if target in kept or self._waiting(*target):
                    continue
                kept.add(target)
            rows.append(
                {
                    "run_id": effect.run_id,
                    "kind": effect.kind,
                    "step_key": effect.step_key,
                    "payload": effect.payload,
                    "created_at": now,
                    "due_at": now,
                    "tries": 0,
                }
            )
        _INSERT_OUTBOX.execute(self.conn, rows)

    def _waiting(self, run_id: str, kind: str, step_key: str) -> bool:
        """Whether a row for this target waits, unclaimed and untried, to render the run.

        Sent after this transaction commits, it shows this transition too. On
        PostgreSQL the row is locked: a sender claiming it at this moment is
        waited for, and then the row no longer qualifies.
        """
        key = {"run_id": run_id, "kind": kind, "step_key": step_key}
        return bool(_PENDING.rows(self.conn, [key]))

    def take_timer(self, run_id: str, key: str, purpose: TimerPurpose) -> bool:
        """Delete the timer; True only for the one caller whose DELETE removed it.

        This is what makes a timer fire once: however many schedulers see it
        due, one transaction wins the row and the others get False and stop.
        """
        result = self.conn.execute(
            sa.delete(timers).where(
                timers.c.run_id == run_id,
                timers.c.step_key == key,
                timers.c.purpose == TimerPurpose(purpose).value,
            )
        )
        return result.rowcount == 1

    def claim_delivery(self, source: str, key: str, now: datetime) -> bool:
        """Record that ``(source, key)`` arrived; False if it had already (drop the duplicate).

        Uses ``ON CONFLICT DO NOTHING``, so a duplicate does not abort the
        transaction on PostgreSQL; a concurrent twin waits for the first to
        commit and then gets False.
        """
        statement = dialect_insert(self.conn, deliveries).on_conflict_do_nothing()
        result = self.conn.execute(statement, {"source": source, "key": key, "created_at": now})
        return result.rowcount == 1

    def claim_schedule_fire(self, flow: str, fire_time: datetime, run_id: str) -> bool:
        """Record that ``flow``'s schedule fired at ``fire_time`` as ``run_id``.

        False if that fire was already claimed (another replica, or a catch-up
        after a restart): the caller must not start the run.
        """
        statement = dialect_insert(self.conn, schedule_fires).on_conflict_do_nothing()
        result = self.conn.execute(
            statement,
            {
                "flow": flow,
                "fire_time": fire_time,
                "run_id": run_id,
                "created_at": datetime.now(UTC),
            },
        )
        return result.rowcount == 1
