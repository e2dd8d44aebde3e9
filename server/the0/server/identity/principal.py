"""Who is calling: set by the auth interceptor, read by handlers through a ContextVar."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from the0.server.errors import Unauthenticated

AuthKind = Literal["jwt", "api_key", "service_key"]
Role = Literal["user", "admin"]
# What a platform service account may call (the0.platform.v1); None for users.
ServiceRole = Literal["runtime", "analyzer"]


def role_of(value: str) -> Role:
    """The Role a verified token or a stored user names (both are checked where they are made)."""
    if value == "user":
        return "user"
    if value == "admin":
        return "admin"
    raise ValueError(f"unknown role {value!r}")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: Role
    auth_kind: AuthKind
    session_id: str | None = None  # set for JWTs
    api_key_id: str | None = None  # set for API keys
    # When the credential stops being valid (the JWT's exp, the key's expiry; None: never).
    # Streams opened with it end then (interceptors/auth.py).
    expires_at: datetime | None = None
    # Set for platform service accounts (auth_kind "service_key"; user_id is then the
    # account's id and role "user": a service account is never an admin).
    service_role: ServiceRole | None = None
    # An API key's scopes (identity/scopes.py), checked by the auth interceptor; empty otherwise.
    api_key_scopes: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The caller of the current RPC; public RPCs have none (a bug to ask there)."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("this call needs credentials", reason="TOKEN_MISSING")
    return principal
