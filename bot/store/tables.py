"""The schema, as SQLAlchemy Core tables on one ``MetaData``.

Alembic migrations are generated from (and tested against) this module, so it is
the single description of the database for SQLite and PostgreSQL alike. Every
constraint gets a name from ``NAMING``: Alembic's batch mode rebuilds SQLite
tables and can only recreate constraints it can name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class _SQLiteUTCText(sqlite.DATETIME):
    """SQLite's DATETIME column, read and written by ``datetime`` itself.

    SQLAlchemy's own processors format each value through a ``%`` template and
    parse it back with a regular expression, about 1.5 µs more per value than
    ``isoformat`` and ``fromisoformat``, and an engine step binds sixteen.
    Those read and write the very same text (``2026-11-21 16:05:10.123456``)
    in C, so rows written either way read back alike.
    """

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        return _from_text


def _from_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _naive(value: datetime) -> str:
    return f"naive datetime {value!r}: Relay stores aware UTC datetimes"


class _SQLiteText:
    """Aware datetimes as SQLite's UTC text, remembering the last one converted.

    A transition stamps most of its rows with one ``now`` (a step's finish, the
    next one's start, their audit entries and outbox rows): that object comes
    back again and again, and is converted once.
    """

    def __init__(self) -> None:
        self._last: tuple[datetime | None, str | None] = (None, None)

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        last, text = self._last
        if value is last:
            return text
        if value.tzinfo is UTC:
            # The engine's clock and every value read back: one call instead of four.
            text = value.isoformat(" ", "microseconds")[:-6]
        else:
            offset = value.utcoffset()
            if offset is None:
                raise ValueError(_naive(value))
            text = (value - offset).replace(tzinfo=None).isoformat(" ", "microseconds")
        self._last = (value, text)
        return text


_sqlite_text = _SQLiteText()


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A point in time, stored in UTC and always read back timezone-aware.

    SQLite keeps no offset, so a naive value read from it would be ambiguous;
    naive values are refused on the way in for the same reason.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SQLiteUTCText()  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(self.impl)

    def bind_processor(self, dialect: Dialect) -> Any:
        # Straight to the text on SQLite, without TypeDecorator's wrapper around
        # ``process_bind_param``: a transition binds a dozen datetimes.
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return _sqlite_text(value)
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(_naive(value))
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> sa.types.TypeEngine[Any]:
    # none_as_null: a Python None is SQL NULL, not the JSON literal ``null``, so
    # ``IS NULL`` works and the column reads back as None either way.
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _serial() -> sa.types.TypeEngine[int]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias).
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


_RUN_ID = sa.String(32)
_STEP_KEY = sa.String(200)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", _RUN_ID, primary_key=True),
    sa.Column("flow", sa.String(100), nullable=False),
    sa.Column("definition", _json(), nullable=False),
    sa.Column("definition_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("inputs", _json(), nullable=False),
    sa.Column("started_by", sa.String(100), nullable=False),
    sa.Column("source", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("error", _json(), nullable=True),
    sa.Column("outputs", _json(), nullable=True),
    sa.Column("parent_run_id", _RUN_ID, sa.ForeignKey("runs.id"), nullable=True),
    sa.Column("parent_step_key", _STEP_KEY, nullable=True),
    sa.Column("undo_plan", _json(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("audit_seq", sa.Integer(), nullable=False),
    sa.Column("audit_head", sa.String(64), nullable=False),
    sa.Column("chat", _json(), nullable=False),
    sa.Index("ix_runs_state_updated_at", "state", "updated_at"),
    sa.Index("ix_runs_flow_created_at", "flow", "created_at"),
    sa.Index("ix_runs_started_by_created_at", "started_by", "created_at"),
    sa.Index("ix_runs_parent_run_id", "parent_run_id"),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", _STEP_KEY, primary_key=True),
    sa.Column("step_id", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("failures", sa.Integer(), nullable=False),
    sa.Column("output", _json(), nullable=True),
    sa.Column("error", _json(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("finish_seq", sa.Integer(), nullable=False),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("detail", _json(), nullable=False),
    sa.Index("ix_step_runs_state_lease_until", "state", "lease_until"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_key", _STEP_KEY, primary_key=True),
    sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("status", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_key", _STEP_KEY, primary_key=True),
    sa.Column("level", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("round", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("deadline", UTCDateTime(), nullable=True),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decided_by", _json(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("how", sa.String(16), nullable=True),
)

votes = sa.Table(
    "votes",
    metadata,
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_key", _STEP_KEY, primary_key=True),
    sa.Column("round", sa.Integer(), primary_key=True, autoincrement=False, server_default="0"),
    sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("voter", sa.String(100), primary_key=True),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("fields", _json(), nullable=False),
    sa.Column("via", sa.String(32), nullable=False),
    sa.Column("groups", _json(), nullable=False),
)

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_key", _STEP_KEY, primary_key=True),
    sa.Column("purpose", sa.String(32), primary_key=True),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Index("ix_timers_due_at", "due_at"),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", _serial(), primary_key=True, autoincrement=True),
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("detail", _json(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("run_id", "seq"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", _serial(), primary_key=True, autoincrement=True),
    sa.Column("run_id", _RUN_ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("step_key", _STEP_KEY, nullable=False),
    sa.Column("payload", _json(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("tries", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Index("ix_outbox_due_at", "due_at"),
    sa.Index("ix_outbox_run_id_kind_step_key", "run_id", "kind", "step_key"),
)

schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("flow", sa.String(100), primary_key=True),
    sa.Column("fire_time", UTCDateTime(), primary_key=True),
    sa.Column("run_id", _RUN_ID, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
