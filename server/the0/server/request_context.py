"""Per-RPC context shared from interceptors to handlers through ContextVars."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The authenticated user's id ("" for public calls): set by the auth interceptor for
# the modules below the domains that bind to the caller (page tokens).
caller_id_var: ContextVar[str] = ContextVar("caller_id", default="")


def current_request_id() -> str:
    return request_id_var.get()
