"""Chat messages waiting to be sent: written with the transition, sent after commit.

A transition's ``ChatEffect``s become outbox rows in the same transaction as
the state they describe, so a crash between commit and send loses nothing: a
sender claims due rows under a lease, sends, then finishes (deletes) them, or
defers them with the error. A sender that dies leaves its lease to expire and
another one claims the rows again, so delivery is at least once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.store.prepared import Prepared
from bot.store.tables import outbox, runs


@dataclass(frozen=True, kw_only=True)
class OutboxItem:
    """One chat effect to deliver, as claimed by a sender."""

    id: int
    run_id: str
    kind: str
    """``run``, ``approval``, ``alert`` or ``reminder`` (see ``ChatEffect``)."""
    step_key: str
    payload: dict[str, Any]
    tries: int
    """Failed deliveries so far (``defer`` counts them): 0 on the first try, for back-off."""
    created_at: datetime


def _claim_statement(*, family: bool) -> sa.Update:
    """The claim, built once per shape: building it cost more than running it."""
    now = sa.bindparam("now", type_=outbox.c.due_at.type)
    free = sa.or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now)
    wanted: sa.ColumnElement[bool] = sa.true()
    if family:
        children = sa.select(runs.c.id).where(runs.c.parent_run_id == sa.bindparam("family"))
        wanted = sa.or_(outbox.c.run_id == sa.bindparam("family"), outbox.c.run_id.in_(children))
    due = (
        sa.select(outbox.c.id)
        .where(outbox.c.due_at <= now, free, wanted)
        .order_by(outbox.c.due_at, outbox.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=sa.bindparam("owner"), lease_until=sa.bindparam("until"))
        .returning(
            outbox.c.id,
            outbox.c.run_id,
            outbox.c.kind,
            outbox.c.step_key,
            outbox.c.payload,
            outbox.c.tries,
            outbox.c.created_at,
        )
    )


_CLAIMS = {family: Prepared(_claim_statement(family=family)) for family in (False, True)}
_FINISH = Prepared(sa.delete(outbox).where(outbox.c.id == sa.bindparam("id")))


def claim(
    conn: sa.Connection,
    owner: str,
    now: datetime,
    *,
    limit: int,
    lease: timedelta,
    family: str | None = None,
) -> list[OutboxItem]:
    """Lease up to ``limit`` due rows to ``owner`` in one statement, oldest first.

    The inner ``SELECT … FOR UPDATE SKIP LOCKED`` makes concurrent claimers on
    PostgreSQL pass over each other's rows instead of queueing; SQLite has one
    writer at a time, so the clause is dropped there. ``family`` limits the
    claim to one run and its sub-runs.
    """
    params = {"now": now, "limit": limit, "owner": owner, "until": now + lease}
    if family is not None:
        params["family"] = family
    items = [OutboxItem(**row) for row in _CLAIMS[family is not None].mappings(conn, params)]
    return sorted(items, key=lambda item: item.id)


def finish(conn: sa.Connection, ids: Collection[int]) -> None:
    """Delete delivered rows."""
    _FINISH.execute(conn, [{"id": item_id} for item_id in ids])


def defer(conn: sa.Connection, item_id: int, *, until: datetime, error: str) -> None:
    """Count a failed delivery, release the lease and make the row due again at ``until``."""
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == item_id)
        .values(
            due_at=until,
            last_error=error,
            tries=outbox.c.tries + 1,
            lease_owner=None,
            lease_until=None,
        )
    )
