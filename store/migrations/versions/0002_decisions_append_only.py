"""The audit trail is append-only in the database itself: UPDATE and DELETE on decisions fail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Signoff never updates or deletes a decision; with these triggers nothing else connected to
the database can either (short of dropping them, which needs the table's owner). On
PostgreSQL TRUNCATE is refused too. A retention job that must remove old decisions has to
drop or disable the triggers for its run.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESSAGE = "decisions is an append-only audit trail"


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER decisions_no_{event.lower()} BEFORE {event} ON decisions "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
        return
    op.execute(
        f"""
        CREATE FUNCTION signoff_decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'restrict_violation', DETAIL = TG_OP || ' on decisions refused';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions "
        "FOR EACH ROW EXECUTE FUNCTION signoff_decisions_append_only()"
    )
    op.execute(
        "CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions "
        "FOR EACH STATEMENT EXECUTE FUNCTION signoff_decisions_append_only()"
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS decisions_no_update")
        op.execute("DROP TRIGGER IF EXISTS decisions_no_delete")
        return
    op.execute("DROP TRIGGER IF EXISTS decisions_no_truncate ON decisions")
    op.execute("DROP TRIGGER IF EXISTS decisions_append_only ON decisions")
    op.execute("DROP FUNCTION IF EXISTS signoff_decisions_append_only()")
