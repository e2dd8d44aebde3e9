"""The audit_events table. The schema itself (and its append-only triggers) is owned by
migration 0630_audit_events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base, UTCDateTime


class AuditEventRow(Base):
    """One security-relevant event. Never updated, never deleted by the application."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_time_id", "time", "id"),
        Index("ix_audit_events_subject_user_id_time_id", "subject_user_id", "time", "id"),
        Index("ix_audit_events_actor_id_time_id", "actor_id", "time", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(String(64))  # "login.succeeded", "admin.user-disabled", ...
    # Who did it: a user or a platform service account; None for an anonymous caller
    # (a failed login, a reset by mailed token before it is claimed).
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    actor_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # user | service_account
    # Whose account it concerns (None when no account matched, as for an unknown email).
    subject_user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    client_address: Mapped[str] = mapped_column(String(64), default="", server_default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="", server_default="")
    # A few ids and words; never a secret, a password or a token (trail.py checks the keys).
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    request_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
