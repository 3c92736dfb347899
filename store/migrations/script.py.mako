"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Write plain SQLAlchemy types here (``sa.String``, ``sa.DateTime(timezone=True)``), not the
models' own, so that this file keeps meaning what it meant when the models move on.
On SQLite, Alembic alters tables in batch mode (copying the table); a table with triggers
(``decisions``, see 0002) must have them created again after such a copy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
