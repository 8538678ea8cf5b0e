"""0002 keys votes by round: rows written under 0001 survive, as round 0, on both backends."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from bot.engine.states import Decision
from bot.store import Database, current_revision, migrate
from bot.store import rows as records
from bot.store.migrate import alembic_config
from bot.store.tables import approvals, runs, votes
from tests.integration.store.builders import make_approval, make_run, make_vote


def _upgrade_to(revision: str) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return work


def _insert_at_0001(conn: Connection, table: sa.Table, row: dict[str, object]) -> None:
    """Insert through the columns 0001 had: the models already know ``round``."""
    values = {name: value for name, value in row.items() if name != "round"}
    columns = [sa.column(name, table.c[name].type) for name in values]
    conn.execute(sa.insert(sa.table(table.name, *columns)), [values])


async def test_votes_written_before_rounds_become_round_zero(database: Database) -> None:
    await database.write(_upgrade_to("0001"))
    assert await current_revision(database) == "0001"
    run = make_run()

    def old_rows(conn: Connection) -> None:
        conn.execute(sa.insert(runs), [records.to_row(run)])
        _insert_at_0001(conn, approvals, records.to_row(make_approval(run.id)))
        _insert_at_0001(conn, votes, records.to_row(make_vote(run.id, "U0A")))

    await database.write(old_rows)
    await migrate(database)

    def read(conn: Connection) -> tuple[list[tuple[int, str]], list[int]]:
        ballots = conn.execute(sa.select(votes.c.round, votes.c.voter))
        rounds = conn.execute(sa.select(approvals.c.round)).scalars()
        return [(number, voter) for number, voter in ballots], list(rounds)

    assert await database.read(read) == ([(0, "U0A")], [0])

    second = make_vote(run.id, "U0A", round=1, decision=Decision.REJECTED)
    await database.write(lambda conn: conn.execute(sa.insert(votes), [records.to_row(second)]))
    ballots, _ = await database.read(read)
    assert sorted(ballots) == [(0, "U0A"), (1, "U0A")], "the same voter answers each round"

    def downgrade(connection: Connection) -> list[tuple[str, str]]:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
        return [
            (voter, decision)
            for voter, decision in connection.execute(sa.text("SELECT voter, decision FROM votes"))
        ]

    assert await database.write(downgrade) == [("U0A", "rejected")], "the latest round is kept"
