"""service accounts of the platform API and the audit of what they fetched

Revision ID: 0530_service_accounts
Revises: 0510_bot_executions
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0530_service_accounts"
down_revision: str | None = "0510_bot_executions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_service_accounts_name")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_service_accounts_key_hash")),
    )
    op.create_table(
        "platform_audit",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("service_account_id", sa.String(36), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("resource_kind", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("secrets_revealed", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["service_account_id"], ["service_accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_platform_audit_service_account_id_service_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_audit")),
    )
    op.create_index("ix_platform_audit_resource_id_create_time", "platform_audit", ["resource_id", "create_time"])


def downgrade() -> None:
    op.drop_index("ix_platform_audit_resource_id_create_time", table_name="platform_audit")
    op.drop_table("platform_audit")
    op.drop_table("service_accounts")
