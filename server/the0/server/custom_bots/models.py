"""The custom_bots table: one row per uploaded version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime, utcnow


class CustomBotRow(Base):
    __tablename__ = "custom_bots"
    __table_args__ = (
        # The same version twice is refused even when two uploads race.
        UniqueConstraint("owner_id", "name", "version", name="uq_custom_bots_owner_id_name_version"),
        # At most one newest version per name: a racing upload of another version fails here.
        Index(
            "uq_custom_bots_owner_id_name_latest",
            "owner_id",
            "name",
            unique=True,
            sqlite_where=text("is_latest = 1"),
            postgresql_where=text("is_latest"),
        ),
        # List pages: newest version of each name, and every version of one name.
        Index("ix_custom_bots_owner_id_is_latest_created_at_id", "owner_id", "is_latest", "created_at", "id"),
        Index("ix_custom_bots_owner_id_name_created_at_id", "owner_id", "name", "created_at", "id"),
        # The admins' review queue: one state across owners, oldest first.
        Index("ix_custom_bots_state_created_at_id", "state", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(50))
    version: Mapped[str] = mapped_column(String(64))
    is_latest: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(32))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    readme: Mapped[str] = mapped_column(Text)
    bot_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    backtest_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    object_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    review_score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    review_reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    review_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    etag: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
