"""Bring the schema to the newest revision, once, however many replicas start together.

Alembic runs on a connection that is already inside a write transaction: on
PostgreSQL that transaction first takes ``pg_advisory_xact_lock(MIGRATION_LOCK)``
(DDL is transactional there, so the lock, the DDL and the version stamp commit
together and a second replica, once it gets the lock, finds the schema at head);
on SQLite the ``BEGIN IMMEDIATE`` write lock does the same job.

No ``alembic.ini`` is needed at run time: ``alembic_config()`` builds the
configuration in code. To write a new revision during development::

    from alembic import command
    command.revision(alembic_config("sqlite:///dev.db"), message="…", autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from bot.store.db import Database

MIGRATION_LOCK = 0x52454C4159
"""Advisory lock key (ASCII "RELAY") that serialises migrations on PostgreSQL."""

_SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration, pointing inside the installed package."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url)
    return config


async def migrate(database: Database) -> None:
    """Upgrade to head under the migration lock. Running it again is a no-op."""
    await database.write(_upgrade)


async def current_revision(database: Database) -> str | None:
    """The revision the database is at, or None before the first migration."""
    return await database.read(_current)


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
