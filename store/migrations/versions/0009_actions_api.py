"""Signoff's own Actions API (the ``signoff`` source): its actions as the clients see them,
the idempotency keys of their writes, and the callbacks owed to them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("external_id", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("callback_url", sa.String(2048), nullable=True),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("decision", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("completed_at", _TS, nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("external_id", name="uq_api_actions_external_id"),
    )
    op.create_index("ix_api_actions_client", "api_actions", ["client"])
    op.create_index("ix_api_actions_status", "api_actions", ["status"])
    op.create_index("ix_api_actions_expires_at", "api_actions", ["expires_at"])
    op.create_table(
        "api_idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("locked_until", _TS, nullable=True),
        sa.UniqueConstraint("client", "key", name="uq_api_idempotency_client_key"),
    )
    op.create_index("ix_api_idempotency_keys_created_at", "api_idempotency_keys", ["created_at"])
    op.create_table(
        "api_callbacks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("api_action_id", sa.Integer(), sa.ForeignKey("api_actions.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.UniqueConstraint("api_action_id", "version", name="uq_api_callbacks_change"),
    )
    op.create_index("ix_api_callbacks_api_action_id", "api_callbacks", ["api_action_id"])
    op.create_index("ix_api_callbacks_state", "api_callbacks", ["state"])
    op.create_index("ix_api_callbacks_next_attempt_at", "api_callbacks", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_table("api_callbacks")
    op.drop_table("api_idempotency_keys")
    op.drop_table("api_actions")
