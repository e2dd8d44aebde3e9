"""Domain values the identity service returns (servicers turn them into protos)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from the0.server.db.models import ApiKeyRow, SessionRow, UserRow
from the0.server.identity.scopes import DEFAULT_SCOPES, from_column

ApiKeyState = Literal["active", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    username: str
    first_name: str
    last_name: str
    role: str
    active: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime
    password_reset_required: bool = False
    email_verified: bool = False
    two_factor_enabled: bool = False

    @classmethod
    def from_row(cls, row: UserRow) -> User:
        return cls(
            id=row.id, email=row.email, username=row.username, first_name=row.first_name,
            last_name=row.last_name, role=row.role, active=row.active, last_login_at=row.last_login_at,
            created_at=row.created_at, updated_at=row.updated_at,
            password_reset_required=bool(row.password_reset_required),
            email_verified=row.email_verified_at is not None,
            two_factor_enabled=row.totp_enabled_at is not None,
        )


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    user: User
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    state: ApiKeyState
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    scopes: tuple[str, ...] = DEFAULT_SCOPES

    @classmethod
    def from_row(cls, row: ApiKeyRow, now: datetime) -> ApiKey:
        state: ApiKeyState = "active"
        if row.revoked_at is not None:
            state = "revoked"
        elif row.expires_at is not None and row.expires_at <= now:
            state = "expired"
        return cls(
            id=row.id, name=row.name, prefix=row.prefix, state=state, created_at=row.created_at,
            expires_at=row.expires_at, last_used_at=row.last_used_at, revoked_at=row.revoked_at,
            scopes=from_column(row.scopes),
        )


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class ApiKeyPage:
    api_keys: list[ApiKey]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    user_agent: str
    client_address: str
    created_at: datetime
    last_used_at: datetime
    current: bool

    @classmethod
    def from_row(cls, row: SessionRow, *, current: bool) -> SessionInfo:
        return cls(id=row.id, user_agent=row.user_agent, client_address=row.client_address,
                   created_at=row.created_at, last_used_at=row.last_used_at or row.created_at, current=current)


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionInfo]
    next_page_token: str
