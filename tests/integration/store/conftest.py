"""Fixtures shared by the store's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Database, open_database


@pytest.fixture
async def table_t(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite database with an empty table ``t (n INTEGER)``, closed after the test."""
    database = open_database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        await database.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (n INTEGER)"))
        yield database
    finally:
        await database.close()
