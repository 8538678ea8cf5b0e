"""Outbox rows are found by their target: ``(run_id, kind, step_key)``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 17:45:00

A status message or an approval card renders the run as it is when sent, so
a transition adds none for a target that already has one waiting: it asks
this index instead of the whole table. Claims for one run (``relay run``)
use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index the outbox by target."""
    op.create_index("ix_outbox_run_id_kind_step_key", "outbox", ["run_id", "kind", "step_key"])


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_outbox_run_id_kind_step_key", table_name="outbox")
