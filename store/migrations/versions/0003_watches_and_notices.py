"""Rollback watches and thread notices.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

``watches``: one row per parsed rollback condition of an approved or running action, with
its baseline, its last reading and whether it is tripped. ``notices``: messages owed in a
card's thread, each created once under a unique key and posted once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _utc(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("actions", _utc("watch_started_at"))

    op.create_table(
        "watches",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("action_id", sa.Integer(), sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("condition", sa.String(), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _utc("started_at", nullable=False),
        _utc("ends_at"),
        sa.Column("baseline", sa.Float(), nullable=True),
        _utc("baseline_at"),
        sa.Column("reading", sa.String(16), nullable=False),
        sa.Column("reading_detail", sa.String(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        _utc("last_observed_at"),
        _utc("checked_at"),
        sa.Column("tripped", sa.Boolean(), nullable=False),
        sa.Column("trips", sa.Integer(), nullable=False),
        _utc("tripped_at"),
        sa.Column("ended", sa.String(32), nullable=True),
        _utc("next_check_at", nullable=False),
        _utc("lease_until"),
        sa.UniqueConstraint("action_id", "position", name="uq_watches_action_position"),
    )
    op.create_index("ix_watches_action_id", "watches", ["action_id"])
    op.create_index("ix_watches_active", "watches", ["active"])
    op.create_index("ix_watches_next_check_at", "watches", ["next_check_at"])

    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("action_id", sa.Integer(), sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("key", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("broadcast", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _utc("next_attempt_at", nullable=False),
        _utc("lease_until"),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("ts", sa.String(32), nullable=True),
        _utc("created_at", nullable=False),
        _utc("posted_at"),
    )
    op.create_index("ix_notices_action_id", "notices", ["action_id"])
    op.create_index("ix_notices_state", "notices", ["state"])
    op.create_index("ix_notices_ts", "notices", ["ts"])


def downgrade() -> None:
    op.drop_table("notices")
    op.drop_table("watches")
    # Not a batch (copy-and-swap) on SQLite: other tables' foreign keys point at actions.
    # SQLite has dropped columns in place since 3.35.
    op.execute("ALTER TABLE actions DROP COLUMN watch_started_at")
