"""Flood control: digests, and the cards listed in one instead of posted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_digests_ts", "digests", ["ts"])
    op.create_index("ix_digests_state", "digests", ["state"])
    op.create_index("ix_digests_dirty", "digests", ["dirty"])
    if op.get_context().dialect.name == "sqlite":
        # In place, not a batch copy (other tables point at cards' neighbours); SQLite takes a
        # REFERENCES clause on a new nullable column.
        op.execute("ALTER TABLE cards ADD COLUMN digest_id INTEGER REFERENCES digests (id)")
    else:
        op.add_column("cards", sa.Column("digest_id", sa.Integer(), sa.ForeignKey("digests.id"), nullable=True))
    op.create_index("ix_cards_digest_id", "cards", ["digest_id"])


def downgrade() -> None:
    op.drop_index("ix_cards_digest_id", table_name="cards")
    if op.get_context().dialect.name == "sqlite":
        op.execute("ALTER TABLE cards DROP COLUMN digest_id")
    else:
        op.drop_column("cards", "digest_id")
    op.drop_table("digests")
