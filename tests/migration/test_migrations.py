"""The migrations build exactly the schema ``tables.py`` describes, on both backends."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
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
from tests.conftest import elsewhere


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _names(connection: Connection) -> list[str]:
    return sa.inspect(connection).get_table_names()


async def _tables(database: Database) -> set[str]:
    return set(await database.read(_names))


async def test_migrated_schema_matches_tables(database: Database) -> None:
    assert await current_revision(database) is None
    await migrate(database)
    assert await current_revision(database) == _head()
    assert await database.read(_diff) == []
    assert await _tables(database) == set(metadata.tables) | {"alembic_version"}


async def test_migrating_twice_is_a_no_op(database: Database) -> None:
    await migrate(database)
    before = await database.read(_names)
    await migrate(database)
    assert await current_revision(database) == _head()

    def work(sync: Connection) -> tuple[list[Any], list[str]]:
        return _diff(sync), _names(sync)

    diff, after = await database.read(work)
    assert diff == []
    assert after == before


async def test_concurrent_migrations_run_once(database: Database) -> None:
    # Two replicas starting together: separate engines, as separate processes would have.
    url = database.url.render_as_string(hide_password=False)
    other = open_database(url)
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(migrate(database), migrate(other))
    finally:
        await other.close()
    assert await current_revision(database) == _head()
    assert await database.read(_diff) == []


async def test_replicas_starting_together_on_new_sqlite_files_all_migrate(
    tmp_path: Path,
) -> None:
    # The first connections to a new WAL file rebuild its index under a lock, and
    # a BEGIN meanwhile failed at once with SQLITE_BUSY_RECOVERY, about one pair
    # in twenty; several new files make that show.
    for number in range(20):
        url = f"sqlite:///{tmp_path / f'new-{number}.db'}"
        one, two = open_database(url), open_database(url)
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(migrate(one), migrate(two))
            assert await current_revision(one) == _head()
        finally:
            await one.close()
            await two.close()


async def test_the_diff_notices_a_schema_that_drifted(database: Database) -> None:
    await migrate(database)
    await database.write(lambda sync: sync.execute(sa.text("DROP INDEX ix_timers_due_at")))
    diff = await database.read(_diff)
    assert [change[0] for change in diff] == ["add_index"]


@pytest.mark.postgres
async def test_migrate_waits_for_the_advisory_lock(pg_url: str) -> None:
    database = open_database(pg_url)
    holding = threading.Event()
    release = threading.Event()

    def hold(conn: Connection) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        holding.set()
        assert release.wait(timeout=20), "never released"

    async def holder(other: Database) -> None:
        await other.write(hold)

    try:
        async with asyncio.timeout(30):
            # The holder is another replica: its work blocks its own loop, not this one.
            held = asyncio.create_task(elsewhere(pg_url, holder))
            assert await asyncio.to_thread(holding.wait, 20)
            waiting = asyncio.create_task(migrate(database))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            release.set()
            await held
            await waiting
        assert await current_revision(database) == _head()
    finally:
        release.set()
        await database.close()
