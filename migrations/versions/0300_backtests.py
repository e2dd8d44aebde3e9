"""backtests: backtests and the CreateBacktest request ids already served

Revision ID: 0300_backtests
Revises: 0200_bots
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0300_backtests"
down_revision: str | None = "0200_bots"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backtests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("custom_bot_id", sa.String(36), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("etag", sa.String(32), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtests")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_backtests_owner_id_users"), ondelete="CASCADE"
        ),
    )
    op.create_index("ix_backtests_owner_id_create_time_id", "backtests", ["owner_id", "create_time", "id"])
    op.create_index(
        "ix_backtests_owner_id_state_create_time_id", "backtests", ["owner_id", "state", "create_time", "id"]
    )
    op.create_table(
        "backtest_requests",
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("backtest_id", sa.String(36), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "request_id", name=op.f("pk_backtest_requests")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_backtest_requests_owner_id_users"), ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("backtest_requests")
    op.drop_index("ix_backtests_owner_id_state_create_time_id", table_name="backtests")
    op.drop_index("ix_backtests_owner_id_create_time_id", table_name="backtests")
    op.drop_table("backtests")
