"""Prepared statements write what Core writes, and refuse what they cannot run as Core would."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store import open_database
from bot.store.prepared import Prepared

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("data", sa.JSON(none_as_null=True)),
    sa.Column("name", sa.String),
)
AT = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)


async def test_values_pass_through_their_types_as_with_core(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    rows = [{"id": 1, "at": AT, "data": {"a": [1, 2]}, "name": "x"}]
    try:
        await database.write(lambda conn: metadata.create_all(conn))
        await database.write(lambda conn: conn.execute(sa.insert(things), rows))
        prepared = Prepared(sa.insert(things))
        await database.write(lambda conn: prepared.execute(conn, [{**rows[0], "id": 2}]))
        raw = await database.read(
            lambda conn: conn.exec_driver_sql("SELECT at, data, name FROM things ORDER BY id").all()
        )
        assert raw[0] == raw[1], "stored exactly as Core stores them"
    finally:
        await database.close()


async def test_rows_of_values_by_name_are_stored_as_with_core(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    names = ("name", "data", "id", "at")
    try:
        await database.write(lambda conn: metadata.create_all(conn))
        await database.write(
            lambda conn: conn.execute(
                sa.insert(things), [{"id": 1, "at": AT, "data": {"a": (1, 2)}, "name": "x"}]
            )
        )
        prepared = Prepared(sa.insert(things))
        rows = [("x", {"a": (1, 2)}, 2, AT), ("y", None, 3, None)]
        await database.write(lambda conn: prepared.execute_rows(conn, names, rows))
        raw = await database.read(
            lambda conn: conn.exec_driver_sql("SELECT at, data, name FROM things ORDER BY id").all()
        )
        assert raw[0] == raw[1], "stored exactly as Core stores them"
        assert raw[2] == (None, None, "y")
    finally:
        await database.close()


async def test_rows_read_back_are_converted_as_with_core(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    select = sa.select(things).where(things.c.id == sa.bindparam("id"))
    try:
        await database.write(lambda conn: metadata.create_all(conn))
        await database.write(
            lambda conn: conn.execute(
                sa.insert(things), [{"id": 1, "at": AT, "data": {"a": [1]}, "name": "x"}]
            )
        )
        core = await database.read(
            lambda conn: dict(conn.execute(select, {"id": 1}).one()._mapping)
        )
        prepared = await database.read(lambda conn: Prepared(select).mappings(conn, {"id": 1}))
        assert prepared == [core]
        assert core["data"] == {"a": [1]}
    finally:
        await database.close()


async def test_values_rendered_at_execution_are_refused(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    listed = Prepared(
        sa.select(things.c.id).where(things.c.id.in_(sa.bindparam("ids", expanding=True)))
    )
    try:
        await database.write(lambda conn: metadata.create_all(conn))
        with pytest.raises(ValueError, match="rendered late"):
            await database.read(lambda conn: listed.rows(conn, [{"ids": [1]}]))
    finally:
        await database.close()
