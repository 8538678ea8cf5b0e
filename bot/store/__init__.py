"""Persistence: runs and everything attached to them, on SQLite or PostgreSQL.

``open_database(url)`` builds the engine, ``Store(database=...)`` is the
contract the engine and the adapters use, and ``Store.migrate()`` brings the
schema to head. Importing this package connects to nothing.
"""

from __future__ import annotations

from bot.store.db import Database, open_database
from bot.store.migrate import current_revision, migrate
from bot.store.outbox import OutboxItem
from bot.store.runs import Store
from bot.store.tx import Tx

__all__ = [
    "Database",
    "OutboxItem",
    "Store",
    "Tx",
    "current_revision",
    "migrate",
    "open_database",
]
