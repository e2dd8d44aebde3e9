"""Listing the audit trail: a user's own events, or (for an admin) everyone's."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.models import AuditEventRow
from the0.server.audit.repository import AuditFilter, AuditRepository
from the0.server.errors import FieldViolation, InvalidArgument
from the0.server.pagination import Cursor, PageTokens, page_size


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: str
    time: datetime
    type: str
    actor_id: str | None
    actor_kind: str | None
    subject_user_id: str | None
    client_address: str
    user_agent: str
    details: dict[str, Any]
    request_id: str

    @classmethod
    def from_row(cls, row: AuditEventRow) -> AuditEvent:
        return cls(id=row.id, time=row.time, type=row.type, actor_id=row.actor_id, actor_kind=row.actor_kind,
                   subject_user_id=row.subject_user_id, client_address=row.client_address,
                   user_agent=row.user_agent, details=dict(row.details or {}), request_id=row.request_id)


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    next_page_token: str


def type_filter(text: str) -> tuple[str, bool]:
    """``login.failed`` is exact; ``login.*`` every type starting ``login.``."""
    return (text[:-1], True) if text.endswith("*") else (text, False)


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], page_tokens: PageTokens) -> None:
        self._sessions = sessions
        self._page_tokens = page_tokens

    async def page(self, where: AuditFilter, *, requested_page_size: int, page_token: str,
                   viewer: str | None = None) -> AuditPage:
        """One page, newest first. With ``viewer`` (a user's own view), the address and user
        agent of events someone else did to them (an admin, a service) are not shown."""
        if where.since is not None and where.until is not None and where.since >= where.until:
            raise InvalidArgument("since must be before until", violations=[
                FieldViolation("since", "must be before until")])
        limit = page_size(requested_page_size)
        scope = f"ListAuditEvents:{where.scope()}"
        after = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as db:
            rows = await AuditRepository(db).page(where, after=after, limit=limit + 1)
        rows, next_token = self._page_tokens.page(rows, limit, scope=scope,
                                                  cursor=lambda row: Cursor(row.time, row.id))
        events = [AuditEvent.from_row(row) for row in rows]
        if viewer is not None:
            events = [e if e.actor_id in (None, viewer) else replace(e, client_address="", user_agent="")
                      for e in events]
        return AuditPage(events, next_token)
