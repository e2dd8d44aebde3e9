"""accounts administration: disabled and reset-required users, the users list, the review queue

Revision ID: 0600_accounts_admin
Revises: 0550_retention_indexes
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0600_accounts_admin"
down_revision: str | None = "0550_retention_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_reset_required", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        # When an admin disabled the account; every replica re-reads the recent ones.
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_users_disabled_at", "users", ["disabled_at"])
    op.create_index("ix_users_created_at_id", "users", ["created_at", "id"])
    # The review queue: one state across owners, oldest first.
    op.create_index("ix_custom_bots_state_created_at_id", "custom_bots", ["state", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_custom_bots_state_created_at_id", table_name="custom_bots")
    op.drop_index("ix_users_created_at_id", table_name="users")
    op.drop_index("ix_users_disabled_at", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("password_reset_required")
