"""The table of bot log lines. The schema itself is owned by migration 0500_bot_logs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime


class BotLogLineRow(Base):
    __tablename__ = "bot_log_lines"
    __table_args__ = (
        UniqueConstraint("bot_id", "ts", "seq"),
        Index("ix_bot_log_lines_bot_id_ts_id", "bot_id", "ts", "id"),
        Index("ix_bot_log_lines_bot_id_id", "bot_id", "id"),
        Index("ix_bot_log_lines_ts", "ts"),
    )

    # Ingestion order, committed in order (repository.insert_lines): the cursor of streams.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    bot_id: Mapped[str] = mapped_column(String(36), ForeignKey("bots.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    seq: Mapped[int] = mapped_column(BigInteger())
    level: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
