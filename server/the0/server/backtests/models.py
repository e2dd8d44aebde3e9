"""Tables of the backtests domain. The schema itself is owned by migrations 0300_backtests and
0540_backtest_results_verdict."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime, utcnow

# The longest store version of analysis.json kept (an S3 ETag is 32 hex digits, and "-<parts>").
ANALYSIS_VERSION_CHARS = 128


class BacktestRow(Base):
    __tablename__ = "backtests"
    __table_args__ = (
        # Keyset paging of one owner's backtests, newest first, with and without a state filter.
        Index("ix_backtests_owner_id_create_time_id", "owner_id", "create_time", "id"),
        Index("ix_backtests_owner_id_state_create_time_id", "owner_id", "state", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # PENDING | RUNNING | COMPLETED | FAILED | CANCELLED
    state: Mapped[str] = mapped_column(String(16))
    # The custom-bot version config.type + config.version resolved to (no foreign key:
    # versions are immutable and owned by the custom-bots domain).
    custom_bot_id: Mapped[str] = mapped_column(String(36))
    # Summary metrics reported with backtest.completed (the full analysis is in object storage).
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    etag: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The check of the results object (analysis.json) as last read: its size, the store's version
    # of those bytes and whether they were JSON. A download of the object at this size and version
    # trusts the verdict instead of parsing it again. Not part of the resource: its etag stays.
    analysis_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    analysis_version: Mapped[str | None] = mapped_column(String(ANALYSIS_VERSION_CHARS), nullable=True)
    analysis_valid: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    # The etag doubles as an optimistic lock (as for bots): every write gets a new one,
    # and an UPDATE says "WHERE etag = <the one read>".
    __mapper_args__ = {  # noqa: RUF012 - SQLAlchemy's own convention
        "version_id_col": etag,
        "version_id_generator": lambda _current: new_etag(),
    }


def new_etag() -> str:
    return secrets.token_hex(8)


class BacktestRequestRow(Base):
    """A CreateBacktest request_id already served: a retry returns its backtest, creating nothing."""

    __tablename__ = "backtest_requests"

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    backtest_id: Mapped[str] = mapped_column(String(36))
    # Indexed for retention.py: a request id is remembered for its retry window only.
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
