"""bots: bots and the request ids already served for them

Revision ID: 0200_bots
Revises: 0100_custom_bots_events
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0200_bots"
down_revision: str | None = "0100_custom_bots_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bots",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("custom_bot_id", sa.String(36), nullable=False),
        sa.Column("etag", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("last_execution", sa.JSON(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bots")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_bots_owner_id_users"), ondelete="CASCADE"
        ),
    )
    op.create_index("ix_bots_owner_id_create_time_id", "bots", ["owner_id", "create_time", "id"])
    op.create_index(
        "ix_bots_owner_id_state_create_time_id", "bots", ["owner_id", "state", "create_time", "id"]
    )
    op.create_table(
        "bot_requests",
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "method", "request_id", name=op.f("pk_bot_requests")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_bot_requests_owner_id_users"), ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("bot_requests")
    op.drop_index("ix_bots_owner_id_state_create_time_id", table_name="bots")
    op.drop_index("ix_bots_owner_id_create_time_id", table_name="bots")
    op.drop_table("bots")
