"""api_keys.scopes: what a key may do (space-separated scopes); existing keys become "full"

Revision ID: 0640_api_key_scopes
Revises: 0630_audit_events
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0640_api_key_scopes"
down_revision: str | None = "0630_audit_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server default fills every existing row: keys made before scopes keep doing everything.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", sa.String(512), nullable=False, server_default="full"))


def downgrade() -> None:
    """Revokes every key that is not "full" before dropping scopes: below this revision every key is a
    full key, so a scoped key left live would silently gain access it was never given."""
    op.execute(sa.text("UPDATE api_keys SET revoked_at = :now WHERE scopes <> 'full' AND revoked_at IS NULL")
               .bindparams(now=datetime.now(UTC)))
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
