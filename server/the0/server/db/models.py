"""SQLAlchemy 2 typed models. The schema itself is owned by the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so migrations can refer to them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC.

    PostgreSQL keeps ``timestamptz``; SQLite drops tzinfo, so values are
    converted to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value  # the DateTime impl has already turned the row value into one
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserRow(Base):
    __tablename__ = "users"
    # Admin's user list: newest first, keyset on (created_at, id).
    __table_args__ = (Index("ix_users_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Stored lower-cased by the repository, so the unique index is case-insensitive.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    last_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Set by an admin's ForcePasswordReset: login refuses until the password is reset.
    password_reset_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # When an admin disabled the account (None while active); indexed: every replica
    # re-reads the recently disabled accounts every few seconds (identity/revocations.py).
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    # When the address was verified (VerifyEmail); None until then.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Two-factor login (identity/two_factor.py): the TOTP secret, sealed under THE0_SECRETS_KEY
    # (never in clear); pending while totp_enabled_at is None. totp_last_step is the time step of
    # the last accepted code: a code counts once.
    totp_secret: Mapped[str | None] = mapped_column(String(512), nullable=True)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # When the owner deleted the account (DeleteAccount): the row stays, anonymised and disabled, so
    # nothing else can take its id; None for a live account.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RecoveryCodeRow(Base):
    """A single-use two-factor recovery code; only its SHA-256 is kept (80 random bits)."""

    __tablename__ = "recovery_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LoginChallengeRow(Base):
    """The second step of a Login with two-factor login on; only the token's SHA-256 is kept."""

    __tablename__ = "login_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default="0")


class AccountTokenRow(Base):
    """A single-use token mailed to a user (password reset, email verification); only its hash is kept."""

    __tablename__ = "account_tokens"
    __table_args__ = (Index("ix_account_tokens_user_id_purpose", "user_id", "purpose"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))  # "password_reset" | "email_verification"
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SessionRow(Base):
    """One login: every access and refresh token issued for it carries its id."""

    __tablename__ = "sessions"
    # ListSessions: one user's sessions, newest first.
    __table_args__ = (Index("ix_sessions_user_id_created_at_id", "user_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Indexed: every replica re-reads the recently revoked sessions every few seconds.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Who logged in from where (ListSessions); the user agent is cut to 256 characters.
    user_agent: Mapped[str] = mapped_column(String(256), default="", server_default="")
    client_address: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # When the session last got tokens (login, then each refresh): no write per request.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the session last proved a second factor (CompleteLogin, ConfirmTotpEnrollment):
    # CreateApiKey wants it recent when two-factor login is on.
    second_factor_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RefreshTokenRow(Base):
    """A refresh token, stored only as its SHA-256; rotated_at marks it used."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Indexed for retention.py, which deletes tokens long expired.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApiKeyRow(Base):
    """An API key: only its keyed hash (HMAC-SHA256) and a display prefix are stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_api_keys_user_id_name"),
        Index("ix_api_keys_user_id_created_at_id", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(50))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    # Space-separated scopes (identity/scopes.py); keys made before scopes are "full".
    scopes: Mapped[str] = mapped_column(String(512), default="full", server_default="full")
