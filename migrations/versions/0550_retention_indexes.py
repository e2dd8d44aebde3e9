"""retention: partial outbox index over unsent rows, indexes on the times retention prunes by

Revision ID: 0550_retention_indexes
Revises: 0540_backtest_results_verdict
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0550_retention_indexes"
down_revision: str | None = "0540_backtest_results_verdict"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNPUBLISHED = sa.text("published_at IS NULL")
_PUBLISHED = sa.text("published_at IS NOT NULL")


def upgrade() -> None:
    # The relay reads only unsent rows: index those, not every event ever written.
    op.drop_index("ix_event_outbox_published_at_seq", table_name="event_outbox")
    op.create_index("ix_event_outbox_unpublished_seq", "event_outbox", ["seq"],
                    postgresql_where=_UNPUBLISHED, sqlite_where=_UNPUBLISHED)
    op.create_index("ix_event_outbox_published_at", "event_outbox", ["published_at"],
                    postgresql_where=_PUBLISHED, sqlite_where=_PUBLISHED)
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])
    op.create_index("ix_bot_requests_create_time", "bot_requests", ["create_time"])
    op.create_index("ix_backtest_requests_create_time", "backtest_requests", ["create_time"])
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens")
    op.drop_index("ix_backtest_requests_create_time", table_name="backtest_requests")
    op.drop_index("ix_bot_requests_create_time", table_name="bot_requests")
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_index("ix_event_outbox_published_at", table_name="event_outbox")
    op.drop_index("ix_event_outbox_unpublished_seq", table_name="event_outbox")
    op.create_index("ix_event_outbox_published_at_seq", "event_outbox", ["published_at", "seq"])
