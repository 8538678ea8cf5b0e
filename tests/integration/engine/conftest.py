"""A migrated, empty database per test, on a real SQLite file and on real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store import Store, open_database
from bot.store.tables import metadata
from tests.conftest import BACKENDS, backend_url


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated database with no rows; each replica opens its own pool on it."""
    url = backend_url(request, tmp_path)
    database = open_database(url)
    try:
        await Store(database=database).migrate()
        if database.dialect == "postgresql":
            names = ", ".join(table.name for table in metadata.sorted_tables)
            await database.write(
                lambda conn: conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            )
    finally:
        await database.close()
    return url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite file, for the tests that are about time rather than the backend."""
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    database = open_database(url)
    try:
        await Store(database=database).migrate()
    finally:
        await database.close()
    return url
