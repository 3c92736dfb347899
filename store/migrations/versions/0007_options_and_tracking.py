"""Decision options per action, and decisions followed upstream until they land.

- ``actions.options``: the decisions an action offers where its source names them per action.
- ``actions.details``: labelled facts and a link that the card shows, in the source's words.
- ``outbox.option_key`` / ``option_label``: which option a person picked (the source's own id).
- ``outbox.reference``: what the upstream gave back for an accepted decision (an execution
  id), followed until it ends.
- ``decisions.option``: the option's label in the audit trail.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("actions", sa.Column("options", sa.JSON(), nullable=True)),
    ("actions", sa.Column("details", sa.JSON(), nullable=True)),
    ("outbox", sa.Column("option_key", sa.String(255), nullable=True)),
    ("outbox", sa.Column("option_label", sa.String(255), nullable=True)),
    ("outbox", sa.Column("reference", sa.String(255), nullable=True)),
    ("decisions", sa.Column("option", sa.String(255), nullable=True)),
)


def upgrade() -> None:
    # Plain ADD COLUMN on every backend (no batch copy on SQLite: the audit trail's triggers
    # and the tables pointing at these stay as they are).
    for table, column in _COLUMNS:
        op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(_COLUMNS):
        op.drop_column(table, column.name)
