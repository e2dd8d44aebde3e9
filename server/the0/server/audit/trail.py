"""``AuditTrail.record``: one audit event, staged in the caller's transaction.

As with the outbox (events/outbox.py), the row is added to the session that makes the
change, so the change and its record commit or vanish together. A refusal that changes
nothing (a failed login) is recorded in a short transaction of its own.

The address and user agent come from the call itself (``request_context.call_origin_var``,
set by the outermost interceptor) read exactly as the login throttle reads them; the request
id joins the event to the access log.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.models import AuditEventRow
from the0.server.client_address import address_from, user_agent_from
from the0.server.errors import Unauthenticated
from the0.server.request_context import call_origin_var, current_request_id
from the0.server.settings import IPNetwork

log = logging.getLogger("the0.audit")
ActorKind = Literal["user", "service_account"]
# The refusals of a signed-in caller's own proof (password or code) that ``refusals_of`` records.
REAUTHENTICATION_REASONS = frozenset({"INVALID_CREDENTIALS", "TOTP_CODE_INVALID"})
Detail = str | int | bool | None
# Keys a detail may never have: whatever is under them would be a credential.
_FORBIDDEN_KEY_PARTS = ("password", "secret", "token", "key_hash", "hash", "code")
DETAIL_VALUE_MAX = 256
TYPE_MAX = 64


class Caller(Protocol):
    """What the trail needs of an authenticated caller (identity's Principal is one)."""

    @property
    def user_id(self) -> str: ...

    @property
    def auth_kind(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Actor:
    id: str
    kind: ActorKind
    # How the actor proved who they are: password, session, api_key, service_key, account_token.
    credential: str

    @staticmethod
    def of(caller: Caller) -> Actor:
        if caller.auth_kind == "service_key":
            return Actor(caller.user_id, "service_account", "service_key")
        return Actor(caller.user_id, "user", "api_key" if caller.auth_kind == "api_key" else "session")

    @staticmethod
    def user(user_id: str, credential: str) -> Actor:
        return Actor(user_id, "user", credential)


class AuditTrail:
    def __init__(self, trusted_proxies: Sequence[IPNetwork]) -> None:
        self._trusted_proxies = tuple(trusted_proxies)

    def record(
        self,
        db: AsyncSession,
        type: str,  # shadows the builtin: the event's field name
        *,
        actor: Actor | None,
        subject_user_id: str | None,
        details: dict[str, Detail] | None = None,
        now: datetime | None = None,
    ) -> AuditEventRow:
        """Stage one event in ``db``'s transaction; it exists once that transaction commits."""
        if not type or len(type) > TYPE_MAX:
            raise ValueError(f"audit event type {type!r} must be 1 to {TYPE_MAX} characters")
        clean = _checked_details(details or {})
        if actor is not None:
            clean["credential"] = actor.credential
        origin = call_origin_var.get()
        row = AuditEventRow(
            id=str(uuid.uuid4()), time=now or datetime.now(UTC), type=type,
            actor_id=actor.id if actor else None, actor_kind=actor.kind if actor else None,
            subject_user_id=subject_user_id,
            client_address=address_from(origin.peer, origin.metadata, self._trusted_proxies)[:64] if origin else "",
            user_agent=user_agent_from(origin.metadata) if origin else "",
            details=clean, request_id=_request_id(),
        )
        db.add(row)
        return row

    @contextlib.asynccontextmanager
    async def refusals_of(
        self, sessions: async_sessionmaker[AsyncSession], caller: Caller, operation: str
    ) -> AsyncIterator[None]:
        """Records ``reauthentication.failed`` when the body refuses the caller's password or code.

        For the calls that ask a signed-in person to prove themselves again (change the password,
        two-factor changes, deleting the account): someone holding a stolen session and guessing
        shows in the trail. The refusal changed nothing, so it is recorded in a short
        transaction of its own, after the body's was rolled back; then the error goes on.
        """
        try:
            yield
        except Unauthenticated as refusal:
            if refusal.reason in REAUTHENTICATION_REASONS:
                try:
                    async with sessions() as db:
                        self.record(db, "reauthentication.failed", actor=Actor.of(caller),
                                    subject_user_id=caller.user_id,
                                    details={"operation": operation, "reason": refusal.reason})
                        await db.commit()
                except Exception as error:  # noqa: BLE001 - the caller is owed the refusal, not this
                    log.warning("a refused reauthentication could not be recorded",
                                extra={"operation": operation, "error": type(error).__name__})
            raise


def _request_id() -> str:
    request_id = current_request_id()
    return "" if request_id == "-" else request_id  # "-": outside an RPC (a background task)


def _checked_details(details: dict[str, Detail]) -> dict[str, Detail]:
    """Small scalar values under harmless keys: a credential cannot slip in by a careless key."""
    clean: dict[str, Detail] = {}
    for key, value in details.items():
        lowered = key.lower()
        if any(part in lowered for part in _FORBIDDEN_KEY_PARTS):
            raise ValueError(f"audit detail {key!r} looks like a credential: never record one")
        clean[key] = value[:DETAIL_VALUE_MAX] if isinstance(value, str) else value
    return clean
