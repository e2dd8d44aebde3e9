"""the audit trail: audit_events, append-only (UPDATE and DELETE refused by triggers)

Revision ID: 0630_audit_events
Revises: 0620_account_tokens
Create Date: 2026-12-02

No foreign keys: the trail outlives the accounts, sessions and bots it names (an account's
deletion keeps its trail), and a cascade would be a DELETE the triggers refuse anyway.

PostgreSQL: one trigger function refuses UPDATE, TRUNCATE and DELETE, except a DELETE in a
transaction that set ``SET LOCAL the0.audit_prune = 'on'`` — the documented pruning path
(docs/accounts.md, "Audit trail"). SQLite (development) refuses both always; pruning there
drops and re-creates the DELETE trigger in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0630_audit_events"
down_revision: str | None = "0620_account_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_FUNCTION = """
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('the0.audit_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
SQLITE_NO_UPDATE = ("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END")
SQLITE_NO_DELETE = ("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor_id", sa.String(36), nullable=True),
        sa.Column("actor_kind", sa.String(16), nullable=True),
        sa.Column("subject_user_id", sa.String(36), nullable=True),
        sa.Column("client_address", sa.String(64), nullable=False, server_default=""),
        sa.Column("user_agent", sa.String(256), nullable=False, server_default=""),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    # The three reads: everyone's (admin), a user's as subject, a user's as actor; newest first.
    op.create_index("ix_audit_events_time_id", "audit_events", ["time", "id"])
    op.create_index("ix_audit_events_subject_user_id_time_id", "audit_events", ["subject_user_id", "time", "id"])
    op.create_index("ix_audit_events_actor_id_time_id", "audit_events", ["actor_id", "time", "id"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute("CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
                   "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()")
        op.execute("CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()")
    else:
        op.execute(SQLITE_NO_UPDATE)
        op.execute(SQLITE_NO_DELETE)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    op.drop_table("audit_events")
