"""Initial schema: actions, their cards, the audit trail (decisions) and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The same tables Signoff created with ``create_all`` before it used migrations; a database
made that way is adopted at this revision by ``Database.migrate()``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _utc(name: str, *, nullable: bool = True) -> sa.Column[object]:
    # store.models.UTCDateTime stores as this type.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Integer(), primary_key=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "actions",
        _id(),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("rationale", sa.String(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("upstream_status", sa.String(64), nullable=False),
        sa.Column("expected_impact", sa.JSON(), nullable=True),
        sa.Column("data_signals", sa.JSON(), nullable=True),
        sa.Column("guardrail_checks", sa.JSON(), nullable=True),
        sa.Column("rollback_conditions", sa.JSON(), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=True),
        _utc("upstream_created_at"),
        _utc("decided_at"),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        _utc("first_seen_at"),
        _utc("updated_at"),
        sa.UniqueConstraint("source", "external_id", name="uq_actions_source_external_id"),
    )
    op.create_index("ix_actions_status", "actions", ["status"])

    op.create_table(
        "cards",
        _id(),
        sa.Column("action_id", sa.Integer(), sa.ForeignKey("actions.id"), nullable=False, unique=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rendered_version", sa.Integer(), nullable=False),
        sa.Column("wanted_version", sa.Integer(), nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        _utc("lease_until"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _utc("next_attempt_at"),
        sa.Column("last_error", sa.String(), nullable=True),
        _utc("posted_at"),
    )
    op.create_index("ix_cards_ts", "cards", ["ts"])
    op.create_index("ix_cards_state", "cards", ["state"])
    op.create_index("ix_cards_dirty", "cards", ["dirty"])

    op.create_table(
        "decisions",
        _id(),
        sa.Column("action_id", sa.Integer(), sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("op", sa.String(16), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=True),
        _utc("at", nullable=False),
    )
    op.create_index("ix_decisions_action_id", "decisions", ["action_id"])

    op.create_table(
        "outbox",
        _id(),
        sa.Column("action_id", sa.Integer(), sa.ForeignKey("actions.id"), nullable=False),
        sa.Column("decision_id", sa.Integer(), sa.ForeignKey("decisions.id"), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("actor_identifier", sa.String(255), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _utc("next_attempt_at", nullable=False),
        _utc("lease_until"),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("notify_channel", sa.String(32), nullable=True),
        _utc("created_at", nullable=False),
        _utc("completed_at"),
    )
    op.create_index("ix_outbox_action_id", "outbox", ["action_id"])
    op.create_index("ix_outbox_state", "outbox", ["state"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("decisions")
    op.drop_table("cards")
    op.drop_table("actions")
