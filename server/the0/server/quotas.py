"""Quotas per owner (bots, active backtests, custom-bot versions), counted in the creating transaction.

Call ``enforce_quota`` after the new row is flushed, inside the transaction that creates
it: the count includes the new row, and over the quota the whole transaction (row,
outbox event, request id) rolls back. Counting after the insert makes the check exact:

- on PostgreSQL, a transaction-scoped advisory lock per (resource, owner) serialises the
  count of concurrent creates; under READ COMMITTED each one, once it holds the lock,
  sees the rows the others committed, so two creates at 99 of 100 cannot both pass;
- on SQLite the insert already holds the database's only write lock until commit.

The lock is taken only by creates of one owner, which are rare; reads never take it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.db.models import Base
from the0.server.errors import ResourceExhausted


class QuotaExceeded(ResourceExhausted):
    """RESOURCE_EXHAUSTED / QUOTA_EXCEEDED. No RetryInfo: waiting does not help, deleting does."""

    default_reason = "QUOTA_EXCEEDED"


async def enforce_quota(
    session: AsyncSession,
    row_type: type[Base],
    owner_id: str,
    *,
    limit: int,
    resource: str,
    what: str,
    conditions: tuple[Any, ...] = (),
    hint: str = "",
) -> None:
    """Raise QuotaExceeded if ``owner_id`` now has more than ``limit`` rows of ``row_type``.

    ``resource`` is the machine name in ``metadata.resource`` (``bots``), ``what`` the words
    of the message (``active backtests``).
    """
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"quota:{resource}:{owner_id}"}
        )
    owner_column = getattr(row_type, "owner_id")  # noqa: B009 - every owned row type names it so
    count = await session.scalar(
        select(func.count()).select_from(row_type).where(owner_column == owner_id, *conditions)
    )
    if count is not None and count > limit:
        raise QuotaExceeded(
            f"quota exceeded: at most {limit} {what} per user{hint}",
            metadata={"limit": str(limit), "resource": resource},
        )
