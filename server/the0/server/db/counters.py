"""Counters every replica shares: one row per key in ``throttle_counters``.

A key names one fixed window of one limit (``login.account:<window>:<digest>``), so a
new window is a new row and an increment is one atomic upsert on both databases:
``INSERT ... ON CONFLICT (key) DO UPDATE SET hits = hits + 1 RETURNING hits``. On
PostgreSQL the upsert locks the row until the caller's transaction ends, so concurrent
increments from any replica are serialised and each sees its own count; SQLite has one
writer at a time anyway. Rows carry ``expires_at`` (Unix seconds) and ``prune`` deletes
the expired ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import BigInteger, Integer, String, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.db.models import Base

KEY_MAX = 96


class ThrottleCounterRow(Base):
    __tablename__ = "throttle_counters"

    key: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


_TABLE = ThrottleCounterRow.metadata.tables[ThrottleCounterRow.__tablename__]


def _insert(db: AsyncSession) -> Callable[[Table], postgresql.Insert | sqlite.Insert]:
    # Both dialects spell the upsert the same way; only the construct's class differs.
    return postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert


async def increment(db: AsyncSession, keys: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Add one to each ``(key, expires_at)`` in one statement; the new counts by key.

    Keys are sorted so two transactions always lock shared rows in the same order
    (no deadlock between concurrent logins on PostgreSQL).
    """
    rows = [{"key": key, "hits": 1, "expires_at": expires} for key, expires in sorted(set(keys))]
    statement = _insert(db)(_TABLE).values(rows).on_conflict_do_update(
        index_elements=[_TABLE.c.key], set_={"hits": _TABLE.c.hits + 1}
    ).returning(_TABLE.c.key, _TABLE.c.hits)
    return {row.key: row.hits for row in await db.execute(statement)}


async def decrement(db: AsyncSession, keys: Sequence[str]) -> None:
    """Give back one hit per key (never below zero); a pruned key stays gone."""
    if keys:
        await db.execute(
            update(_TABLE).where(_TABLE.c.key.in_(sorted(set(keys))), _TABLE.c.hits > 0)
            .values(hits=_TABLE.c.hits - 1)
        )


async def mark(db: AsyncSession, key: str, expires_at: int) -> None:
    """A flag that holds until ``expires_at`` (setting it again moves the expiry)."""
    statement = _insert(db)(_TABLE).values(key=key, hits=0, expires_at=expires_at)
    await db.execute(statement.on_conflict_do_update(index_elements=[_TABLE.c.key],
                                                     set_={"expires_at": statement.excluded.expires_at}))


async def is_marked(db: AsyncSession, key: str, now: int) -> bool:
    found = await db.execute(select(_TABLE.c.key).where(_TABLE.c.key == key, _TABLE.c.expires_at > now))
    return found.first() is not None


async def prune(db: AsyncSession, now: int) -> int:
    """Delete expired rows; how many."""
    result = await db.execute(delete(_TABLE).where(_TABLE.c.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
