"""Reminders, escalations and routing: when a card was reminded about or escalated, a notice
posted to another channel, and the action's risk for routes to match on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _drop(table: str, column: str) -> None:
    # In place, not a batch copy: other tables' foreign keys point at these (SQLite >= 3.35).
    op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def upgrade() -> None:
    op.add_column("actions", sa.Column("risk", sa.String(32), nullable=True))
    op.add_column("cards", sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cards", sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notices", sa.Column("channel", sa.String(32), nullable=True))
    # /signoff looks actions up by their upstream id alone, and reads decisions by time.
    op.create_index("ix_actions_external_id", "actions", ["external_id"])
    op.create_index("ix_decisions_at", "decisions", ["at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_at", table_name="decisions")
    op.drop_index("ix_actions_external_id", table_name="actions")
    _drop("notices", "channel")
    _drop("cards", "escalated_at")
    _drop("cards", "reminded_at")
    _drop("actions", "risk")
