"""The migrations build exactly the schema ``tables.py`` describes, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from bot.store import Database, current_revision, migrate, open_database
from bot.store.migrate import MIGRATION_LOCK, alembic_config
from bot.store.tables import metadata


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _tables(database: Database) -> set[str]:
    async with database.read() as conn:
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    return set(names)


async def test_migrated_schema_matches_tables(database: Database) -> None:
    assert await current_revision(database) is None
    await migrate(database)
    assert await current_revision(database) == _head()
    async with database.read() as conn:
        assert await conn.run_sync(_diff) == []
    assert await _tables(database) == set(metadata.tables) | {"alembic_version"}


async def test_migrating_twice_is_a_no_op(database: Database) -> None:
    await migrate(database)
    async with database.read() as conn:
        before = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    await migrate(database)
    assert await current_revision(database) == _head()
    async with database.read() as conn:
        assert await conn.run_sync(_diff) == []
        after = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert after == before


async def test_concurrent_migrations_run_once(database: Database) -> None:
    # Two replicas starting together: separate engines, as separate processes would have.
    url = database.engine.url.render_as_string(hide_password=False)
    other = open_database(url)
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(migrate(database), migrate(other))
    finally:
        await other.close()
    assert await current_revision(database) == _head()
    async with database.read() as conn:
        assert await conn.run_sync(_diff) == []


async def test_the_diff_notices_a_schema_that_drifted(database: Database) -> None:
    await migrate(database)
    async with database.write() as conn:
        await conn.execute(sa.text("DROP INDEX ix_timers_due_at"))
    async with database.read() as conn:
        diff = await conn.run_sync(_diff)
    assert [change[0] for change in diff] == ["add_index"]


@pytest.mark.postgres
async def test_migrate_waits_for_the_advisory_lock(pg_url: str) -> None:
    database = open_database(pg_url)
    holder = open_database(pg_url)
    try:
        async with holder.write() as conn:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            waiting = asyncio.create_task(migrate(database))
            await asyncio.sleep(0.5)
            assert not waiting.done()
        async with asyncio.timeout(30):
            await waiting
        assert await current_revision(database) == _head()
    finally:
        await holder.close()
        await database.close()
