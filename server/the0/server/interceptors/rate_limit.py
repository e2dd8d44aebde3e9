"""Limits per caller, after auth (which names the caller) and before the input gate.

The caller is the authenticated user (a JWT and an API key of one user share their
limits) or, for public RPCs, the client's address (an IPv6 client's /64: one host
owns far more addresses than that). Three limits, all per replica (docs/limits.md):

- a token bucket of requests: a read costs 1 token, a write ``write_cost`` (what is a
  read is what the RPC declares in the proto, ``(the0.common.v1.access)``, the declaration
  API-key scopes read too; see ``request_costs``), because a write is a transaction, an outbox event and what the
  runtime does with it. Refused with RESOURCE_EXHAUSTED / RATE_LIMITED, a RetryInfo
  and, as trailing metadata, ``retry-after`` and the IETF ``ratelimit`` /
  ``ratelimit-policy`` fields: the answer is trailers-only (nothing was sent yet),
  so Envoy's transcoder passes them on as HTTP headers of the 429;
- streams (server-streaming RPCs: watches, downloads) open at once, released when
  the stream ends however it ends (TOO_MANY_STREAMS);
- uploads (client-streaming RPCs) in progress at once (TOO_MANY_UPLOADS).

gRPC's own health and reflection services are exempt: Envoy and load balancers
probe them from one address, and they read nothing.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

import grpc
import grpc.aio
from google.api import annotations_pb2
from google.protobuf.descriptor import ServiceDescriptor

from the0.common.v1 import access_pb2
from the0.server.errors import ResourceExhausted
from the0.server.identity.principal import principal_var
from the0.server.interceptors.wrapping import AnyContext, AnyHandler, HandlerRewriter, wrap_handler
from the0.server.limits import Decision, RateLimiter, RatePolicy, Slots, SlotsFull

EXEMPT_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
POLICY_NAME = "requests"


class Kind(Enum):
    UNARY = "unary"
    STREAM = "stream"  # the server streams: watches, downloads
    UPLOAD = "upload"  # the client streams


@dataclass(frozen=True, slots=True)
class CallerLimits:
    rate: RatePolicy
    write_cost: int
    max_streams: int
    max_uploads: int


def request_costs(services: Iterable[ServiceDescriptor], write_cost: int) -> dict[str, int]:
    """``{"/pkg.Service/Method": cost}``: 1 for an RPC that declares it only reads, ``write_cost`` otherwise.

    The declared access level decides, whatever the HTTP verb. Public RPCs (sign-in, sign-up,
    refresh, password reset, the health check) declare no access, having no credential to
    scope: for them alone the HTTP rule says it (GET reads; the others hash a password or
    issue a token, so they are writes).
    """
    costs: dict[str, int] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(access_pb2.access):
                reads = options.Extensions[access_pb2.access].level == access_pb2.ACCESS_LEVEL_READ
            else:
                reads = options.Extensions[annotations_pb2.http].WhichOneof("pattern") == "get"
            costs[f"/{service.full_name}/{method.name}"] = 1 if reads else write_cost
    return costs


AddressOf = Callable[[AnyContext], str]


def caller_key(context: AnyContext, address_of: AddressOf) -> str:
    principal = principal_var.get()
    if principal is not None:
        return f"user:{principal.user_id}"
    address = address_of(context)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"peer:{address}"
    if ip.version == 6:
        return f"net:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"ip:{ip}"


class _StatusWithHeaders(grpc.Status):
    def __init__(self, status: grpc.Status, headers: Sequence[tuple[str, str]]) -> None:
        self.code = status.code
        self.details = status.details
        self.trailing_metadata = (*status.trailing_metadata, *headers)


class RateLimited(ResourceExhausted):
    """RESOURCE_EXHAUSTED / RATE_LIMITED with the HTTP rate-limit fields as trailing metadata."""

    default_reason = "RATE_LIMITED"

    def __init__(self, policy: RatePolicy, decision: Decision) -> None:
        wait = max(1, math.ceil(decision.retry_after))  # Retry-After is whole seconds
        super().__init__(
            f"too many requests: at most {policy.rate:g} per second (bursts of {policy.burst}); "
            f"retry in {wait} s",
            metadata={"limit": str(policy.burst), "retryAfterSeconds": str(wait)},
            retry_after=timedelta(seconds=decision.retry_after),
        )
        self.headers = (
            ("retry-after", str(wait)),
            ("ratelimit-policy", f'"{POLICY_NAME}";q={policy.burst};w={policy.window_seconds}'),
            ("ratelimit", f'"{POLICY_NAME}";r={decision.remaining};t={wait}'),
        )

    def to_status(self) -> grpc.Status:
        return _StatusWithHeaders(super().to_status(), self.headers)


class RateLimitInterceptor(HandlerRewriter):
    def __init__(self, limits: CallerLimits, costs: dict[str, int], *, address_of: AddressOf) -> None:
        """``address_of`` names an anonymous caller: identity's ``client_address`` (the one
        reading of x-forwarded-for, trusted from Envoy only), bound to the trusted proxies."""
        super().__init__()
        self.limits = limits
        self._address_of = address_of
        self.rate = RateLimiter(limits.rate)
        self.streams = Slots(limits.max_streams)
        self.uploads = Slots(limits.max_uploads)
        self._costs = costs

    def rewrite(self, handler: AnyHandler, method: str) -> AnyHandler:
        if method.startswith(EXEMPT_PREFIXES):
            return handler
        kind = Kind.UPLOAD if handler.stream_unary else Kind.UNARY if handler.unary_unary else Kind.STREAM
        cost = self._costs.get(method, 1)

        def around(_method: str, context: AnyContext) -> AbstractAsyncContextManager[None]:
            return self._limit(kind, cost, context)

        return wrap_handler(handler, method, around)

    @asynccontextmanager
    async def _limit(self, kind: Kind, cost: int, context: AnyContext) -> AsyncIterator[None]:
        key = caller_key(context, self._address_of)
        decision = self.rate.take(key, cost)
        if not decision.allowed:
            raise RateLimited(self.limits.rate, decision)
        if kind is Kind.UNARY:
            yield
            return
        slots, reason, what = (
            (self.streams, "TOO_MANY_STREAMS", "streams (watches, downloads)")
            if kind is Kind.STREAM
            else (self.uploads, "TOO_MANY_UPLOADS", "uploads")
        )
        try:
            slots.acquire(key)
        except SlotsFull:
            raise ResourceExhausted(
                f"too many {what} open at once: at most {slots.limit}; close one first",
                reason=reason, metadata={"limit": str(slots.limit)},
            ) from None
        try:
            yield
        finally:
            slots.release(key)
