"""bot_executions: the history of every bot's executions, one row per (bot, execution)

Revision ID: 0510_bot_executions
Revises: 0500_bot_logs
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0510_bot_executions"
down_revision: str | None = "0500_bot_logs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_executions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("execution_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sort_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_bot_executions_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_bot_executions_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_executions")),
        # The upsert key: started, completed and redeliveries of one execution meet in one row.
        sa.UniqueConstraint("bot_id", "execution_id", name=op.f("uq_bot_executions_bot_id")),
    )
    # Keyset pages of one bot's executions, newest first, and the per-bot cap.
    op.create_index("ix_bot_executions_bot_id_sort_time_id", "bot_executions", ["bot_id", "sort_time", "id"])
    # The retention prune deletes by age across all bots.
    op.create_index("ix_bot_executions_sort_time", "bot_executions", ["sort_time"])


def downgrade() -> None:
    op.drop_index("ix_bot_executions_sort_time", table_name="bot_executions")
    op.drop_index("ix_bot_executions_bot_id_sort_time_id", table_name="bot_executions")
    op.drop_table("bot_executions")
