"""Tables of the bots domain. The schema itself is owned by migration 0200_bots."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime, utcnow


class BotRow(Base):
    __tablename__ = "bots"
    __table_args__ = (
        # Keyset paging of one owner's bots, newest first, with and without a state filter.
        Index("ix_bots_owner_id_create_time_id", "owner_id", "create_time", "id"),
        Index("ix_bots_owner_id_state_create_time_id", "owner_id", "state", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # DRAFT | DEPLOYING | RUNNING | STOPPING | STOPPED | FAILED
    state: Mapped[str] = mapped_column(String(16))
    # The custom-bot version config.type + config.version resolved to (no foreign key:
    # versions are immutable and owned by the custom-bots domain).
    custom_bot_id: Mapped[str] = mapped_column(String(36))
    etag: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # {id, state, startTime, endTime, result, error} of the latest execution reported.
    last_execution: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # The etag is also the optimistic lock: every UPDATE/DELETE of a row says
    # "WHERE etag = <the one read>", and every write gets a new one, so two
    # concurrent writes cannot both win (the loser gets StaleDataError).
    __mapper_args__ = {  # noqa: RUF012 - SQLAlchemy's own convention
        "version_id_col": etag,
        "version_id_generator": lambda _current: new_etag(),
    }


def new_etag() -> str:
    return secrets.token_hex(8)


class BotRequestRow(Base):
    """A request_id already served (CreateBot, DeployBot): a retry returns its bot, with no second effect."""

    __tablename__ = "bot_requests"

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # "create" | "deploy"
    method: Mapped[str] = mapped_column(String(16), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    bot_id: Mapped[str] = mapped_column(String(36))
    # Indexed for retention.py: a request id is remembered for its retry window only.
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
