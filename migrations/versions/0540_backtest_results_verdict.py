"""backtests: the verdict on the results object (analysis.json) as last checked

Revision ID: 0540_backtest_results_verdict
Revises: 0530_service_accounts
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0540_backtest_results_verdict"
down_revision: str | None = "0530_service_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backtests") as batch:
        batch.add_column(sa.Column("analysis_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("analysis_version", sa.String(128), nullable=True))
        batch.add_column(sa.Column("analysis_valid", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backtests") as batch:
        batch.drop_column("analysis_valid")
        batch.drop_column("analysis_version")
        batch.drop_column("analysis_size")
