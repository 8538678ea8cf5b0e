"""Alembic environment: online only, in a transaction of ``bot.store.db.Database``.

``bot.store.migrate`` hands in a connection that is already inside a locked
transaction (``config.attributes["connection"]``). Without one (the ``alembic``
command line, e.g. to autogenerate a revision) it opens ``sqlalchemy.url``
itself with the same engine factory the application uses.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from bot.store.db import open_database
from bot.store.tables import UTCDateTime, metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import application types that may change later.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    database = open_database(url)
    try:
        await database.write(_run)
    finally:
        await database.close()


if context.is_offline_mode():
    raise RuntimeError("Relay migrations run online only")

_given = context.config.attributes.get("connection")
if _given is not None:
    _run(_given)
else:
    asyncio.run(_run_from_url(context.config.get_main_option("sqlalchemy.url") or ""))
