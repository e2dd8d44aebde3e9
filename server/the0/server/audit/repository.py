"""Reads of the audit trail: newest first, keyset pages on (time, id), with filters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.audit.models import AuditEventRow
from the0.server.pagination import Cursor


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """``type`` is exact, or a prefix when ``type_prefix``; ``since`` inclusive, ``until`` exclusive.

    ``involving``: only events whose actor or subject is this user.
    """

    type: str = ""
    type_prefix: bool = False
    since: datetime | None = None
    until: datetime | None = None
    involving: str | None = None

    def scope(self) -> str:
        """The filter as a page token's scope: a token of one filter is refused by another."""
        return ":".join((self.type, str(self.type_prefix), _iso(self.since), _iso(self.until),
                         self.involving or "*"))


class AuditRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def page(self, where: AuditFilter, *, after: Cursor | None, limit: int) -> list[AuditEventRow]:
        if where.involving is not None:
            # Two index range scans (actor, subject) merged, rather than an OR the planner
            # could only answer by walking every event.
            rows = [*await self._run(_filtered(where, after).where(AuditEventRow.actor_id == where.involving), limit),
                    *await self._run(_filtered(where, after).where(
                        AuditEventRow.subject_user_id == where.involving,
                        or_(AuditEventRow.actor_id.is_(None), AuditEventRow.actor_id != where.involving)), limit)]
            rows.sort(key=lambda r: (r.time, r.id), reverse=True)
            return rows[:limit]
        return await self._run(_filtered(where, after), limit)

    async def _run(self, statement: Select[AuditEventRow], limit: int) -> list[AuditEventRow]:
        statement = statement.order_by(AuditEventRow.time.desc(), AuditEventRow.id.desc()).limit(limit)
        return list((await self._db.execute(statement)).scalars())


def _filtered(where: AuditFilter, after: Cursor | None) -> Select[AuditEventRow]:
    statement = select(AuditEventRow)
    if where.type:
        if where.type_prefix:
            statement = statement.where(AuditEventRow.type.startswith(where.type, autoescape=True))
        else:
            statement = statement.where(AuditEventRow.type == where.type)
    if where.since is not None:
        statement = statement.where(AuditEventRow.time >= where.since)
    if where.until is not None:
        statement = statement.where(AuditEventRow.time < where.until)
    if after is not None:
        statement = statement.where(or_(AuditEventRow.time < after.create_time,
                                        and_(AuditEventRow.time == after.create_time, AuditEventRow.id < after.id)))
    return statement


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "-"
