"""Per-RPC context shared from interceptors to handlers through ContextVars."""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The authenticated user's id ("" for public calls): set by the auth interceptor for
# the modules below the domains that bind to the caller (page tokens).
caller_id_var: ContextVar[str] = ContextVar("caller_id", default="")



@dataclass(frozen=True, slots=True)
class CallOrigin:
    """The peer and metadata of the current call, as the outermost interceptor read them
    (before any await: grpcio can crash reading the peer of a call the client cancelled).
    The audit trail names the caller's address and user agent from them."""

    peer: str
    metadata: Iterable[tuple[str, str | bytes]]  # a re-iterable grpc Metadata or a tuple


call_origin_var: ContextVar[CallOrigin | None] = ContextVar("call_origin", default=None)


def current_request_id() -> str:
    return request_id_var.get()
