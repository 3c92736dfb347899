"""Decision bodies built once, and open actions of sources that cannot be listed read again.

- ``outbox.request_body``: the request body a source built once for a decision (Fieldkit's
  decide: the same ``Idempotency-Key`` must carry the same body byte for byte), sent as is on
  every attempt.
- ``actions.refresh_at`` / ``actions.refresh_misses``: when an open action of a source that
  cannot be listed is read again, and how many reads in a row found nothing new (backoff).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on every backend (no batch copy on SQLite, as in 0007).
    op.add_column("outbox", sa.Column("request_body", sa.Text(), nullable=True))
    op.add_column("actions", sa.Column("refresh_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("actions", sa.Column("refresh_misses", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_actions_refresh_at", "actions", ["refresh_at"])


def downgrade() -> None:
    op.drop_index("ix_actions_refresh_at", table_name="actions")
    op.drop_column("actions", "refresh_misses")
    op.drop_column("actions", "refresh_at")
    op.drop_column("outbox", "request_body")
