"""Tables of the platform domain. The schema itself is owned by migration 0530_service_accounts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime, utcnow


class ServiceAccountRow(Base):
    __tablename__ = "service_accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # runtime | analyzer
    # SHA-256 of the key: keys are 256 random bits (or >= 32 characters from the
    # environment), so a fast hash is enough and the lookup is one indexed read.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The admin who created it; None when bootstrapped from THE0_SERVICE_ACCOUNTS.
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PlatformAuditRow(Base):
    """One row per platform call that handed out a user's data: who, what, when."""

    __tablename__ = "platform_audit"
    __table_args__ = (Index("ix_platform_audit_resource_id_create_time", "resource_id", "create_time"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service_account_id: Mapped[str] = mapped_column(ForeignKey("service_accounts.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(64))  # GetBotDeployment | GetCustomBotArchive
    resource_kind: Mapped[str] = mapped_column(String(16))  # bot | custom_bot
    resource_id: Mapped[str] = mapped_column(String(36))
    owner_id: Mapped[str] = mapped_column(String(36))
    # Whether the answer held revealed secret config fields.
    secrets_revealed: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
