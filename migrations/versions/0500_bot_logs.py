"""bot logs: the lines the runtime publishes, kept per bot for a retention

Revision ID: 0500_bot_logs
Revises: 0400_throttles
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0500_bot_logs"
down_revision: str | None = "0400_throttles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_log_lines",
        # Ingestion order: committed in order (see bot_logs/repository.py), the cursor of streams.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        # The runtime's sequence of the line (or one derived from the JetStream sequence).
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_log_lines")),
        sa.ForeignKeyConstraint(["bot_id"], ["bots.id"], name=op.f("fk_bot_log_lines_bot_id_bots"),
                                ondelete="CASCADE"),
        # A redelivered or republished line hits this and is skipped.
        sa.UniqueConstraint("bot_id", "ts", "seq", name=op.f("uq_bot_log_lines_bot_id")),
    )
    # ListBotLogs pages by (ts, id); streams and the per-bot line cap by id.
    op.create_index("ix_bot_log_lines_bot_id_ts_id", "bot_log_lines", ["bot_id", "ts", "id"])
    op.create_index("ix_bot_log_lines_bot_id_id", "bot_log_lines", ["bot_id", "id"])
    # Age retention deletes by time across bots.
    op.create_index("ix_bot_log_lines_ts", "bot_log_lines", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_bot_log_lines_ts", table_name="bot_log_lines")
    op.drop_index("ix_bot_log_lines_bot_id_id", table_name="bot_log_lines")
    op.drop_index("ix_bot_log_lines_bot_id_ts_id", table_name="bot_log_lines")
    op.drop_table("bot_log_lines")
