"""Votes keep every request's answers: ``round`` joins the votes' primary key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:05:00

An operator's retry asks an approval again. The votes table was keyed by
(run, step, level, voter), so a voter answering the new request overwrote
their answer to the earlier one, which only the audit trail kept. Each
approval now counts its requests (``approvals.round``) and each vote names the
request it answered. Existing rows are round 0. SQLite cannot change a primary
key in place, so the batch operation copies the table there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = ["run_id", "step_key", "level", "voter"]
_NEW_KEY = ["run_id", "step_key", "round", "level", "voter"]


def upgrade() -> None:
    """Add the round counters and key the votes by round."""
    with op.batch_alter_table("approvals") as approvals:
        approvals.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("votes") as votes:
        votes.add_column(
            sa.Column(
                "round", sa.Integer(), autoincrement=False, nullable=False, server_default="0"
            )
        )
        votes.drop_constraint("pk_votes", type_="primary")
        votes.create_primary_key("pk_votes", _NEW_KEY)


def downgrade() -> None:
    """Back to one vote per (run, step, level, voter): the latest round's answer is kept."""
    op.execute(
        "DELETE FROM votes WHERE round < "
        "(SELECT max(v.round) FROM votes v WHERE v.run_id = votes.run_id "
        "AND v.step_key = votes.step_key AND v.level = votes.level AND v.voter = votes.voter)"
    )
    with op.batch_alter_table("votes") as votes:
        votes.drop_constraint("pk_votes", type_="primary")
        votes.create_primary_key("pk_votes", _OLD_KEY)
        votes.drop_column("round")
    with op.batch_alter_table("approvals") as approvals:
        approvals.drop_column("round")
