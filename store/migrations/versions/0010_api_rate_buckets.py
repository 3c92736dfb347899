"""The Actions API's rate limit shared by replicas: one token bucket per API key; and thread
notices owed by actions whose card is held (no thread to post them in) settled as skipped.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_rate_buckets",
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )
    # Owed before Signoff stopped owing them (their card is held: they would wait for ever).
    op.execute(
        "UPDATE notices SET state = 'skipped', lease_until = NULL"
        " WHERE state IN ('pending', 'posting') AND channel IS NULL"
        " AND action_id IN (SELECT action_id FROM cards WHERE state = 'held')"
    )


def downgrade() -> None:
    op.drop_table("api_rate_buckets")
