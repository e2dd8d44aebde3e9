"""sessions: who logged in from where, and when the session last got tokens (ListSessions)

Revision ID: 0610_session_details
Revises: 0600_accounts_admin
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0610_session_details"
down_revision: str | None = "0600_accounts_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("user_agent", sa.String(256), nullable=False, server_default=""))
        batch.add_column(sa.Column("client_address", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    # ListSessions: one user's sessions, newest first, keyset on (created_at, id).
    op.create_index("ix_sessions_user_id_created_at_id", "sessions", ["user_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_user_id_created_at_id", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("client_address")
        batch.drop_column("user_agent")
