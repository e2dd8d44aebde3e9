"""Tables of the event backbone: the outbox and the processed inbound events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class OutboxRow(Base):
    """An event waiting to be (or already) published; written in the change's own transaction."""

    __tablename__ = "event_outbox"
    __table_args__ = (
        # The relay's query: unsent rows in commit order. Partial: it covers the few rows waiting,
        # not every event ever written (published rows are pruned later by retention.py).
        Index("ix_event_outbox_unpublished_seq", "seq",
              postgresql_where=text("published_at IS NULL"), sqlite_where=text("published_at IS NULL")),
        # Retention's query: published rows past their window.
        Index("ix_event_outbox_published_at", "published_at",
              postgresql_where=text("published_at IS NOT NULL"), sqlite_where=text("published_at IS NOT NULL")),
    )

    seq: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ProcessedEventRow(Base):
    """An inbound event already applied: a redelivery of the same id is a no-op."""

    __tablename__ = "processed_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # Indexed for retention.py, which forgets ids past the redelivery window.
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
