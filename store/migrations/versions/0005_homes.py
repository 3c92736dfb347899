"""App Home bookkeeping.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

``homes``: one row per user who opened Signoff's Home tab, with when, and the fingerprint of
the Home last published to them (the refresh job republishes only when it changed). An index
on ``decisions (actor, id)`` lets a viewer's recent decisions be read without scanning the
audit trail.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "homes",
        sa.Column("user_id", sa.String(32), primary_key=True, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fingerprint", sa.String(128), nullable=True),
    )
    op.create_index("ix_decisions_actor_id", "decisions", ["actor", "id"])


def downgrade() -> None:
    op.drop_index("ix_decisions_actor_id", table_name="decisions")
    op.drop_table("homes")
