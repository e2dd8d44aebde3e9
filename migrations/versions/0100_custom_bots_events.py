"""custom bots and the event backbone: custom_bots, event_outbox, processed_events

Revision ID: 0100_custom_bots_events
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0100_custom_bots_events"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "custom_bots",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("is_latest", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("readme", sa.Text(), nullable=False),
        sa.Column("bot_schema", sa.JSON(), nullable=False),
        sa.Column("backtest_schema", sa.JSON(), nullable=True),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("review_score", sa.Integer(), nullable=True),
        sa.Column("review_reasons", sa.JSON(), nullable=True),
        sa.Column("reviewer", sa.String(100), nullable=True),
        sa.Column("review_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("etag", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_bots")),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_custom_bots_owner_id_users"),
                                ondelete="CASCADE"),
        sa.UniqueConstraint("owner_id", "name", "version", name="uq_custom_bots_owner_id_name_version"),
    )
    op.create_index(
        "uq_custom_bots_owner_id_name_latest", "custom_bots", ["owner_id", "name"], unique=True,
        sqlite_where=sa.text("is_latest = 1"), postgresql_where=sa.text("is_latest"),
    )
    op.create_index("ix_custom_bots_owner_id_is_latest_created_at_id", "custom_bots",
                    ["owner_id", "is_latest", "created_at", "id"])
    op.create_index("ix_custom_bots_owner_id_name_created_at_id", "custom_bots",
                    ["owner_id", "name", "created_at", "id"])

    op.create_table(
        "event_outbox",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_event_outbox_id")),
    )
    op.create_index("ix_event_outbox_published_at_seq", "event_outbox", ["published_at", "seq"])

    op.create_table(
        "processed_events",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_processed_events")),
    )


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("event_outbox")
    op.drop_table("custom_bots")
