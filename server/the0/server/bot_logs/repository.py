"""SQL of the bot logs: idempotent batch inserts in commit order, keyset pages, retention.

Streams follow lines by ``id``. Ids must become visible in increasing order, or a
stream that has read id 11 would never see an id 10 committed after it. On
PostgreSQL every insert therefore takes one transaction-scoped advisory lock
before drawing ids, so batches of all replicas commit one after the other in id
order; SQLite has a single writer anyway. A batch of 500 lines holds the lock
for a few milliseconds, well within the ingest budget (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.bot_logs.lines import LogLine
from the0.server.bot_logs.models import BotLogLineRow

# Any constant: the lock only orders log inserts among themselves.
_INSERT_LOCK = 0x7468_306C_6F67
# The bots table of the bots domain, read only for ownership and existence.
_bots = sa.table("bots", sa.column("id", sa.String), sa.column("owner_id", sa.String))


async def existing_bots(session: AsyncSession, bot_ids: set[str]) -> set[str]:
    if not bot_ids:
        return set()
    rows = await session.execute(sa.select(_bots.c.id).where(_bots.c.id.in_(bot_ids)))
    return {row[0] for row in rows}


async def owns_bot(session: AsyncSession, owner_id: str, bot_id: str) -> bool:
    found = await session.execute(
        sa.select(_bots.c.id).where(_bots.c.id == bot_id, _bots.c.owner_id == owner_id)
    )
    return found.first() is not None


async def bot_exists(session: AsyncSession, bot_id: str) -> bool:
    return bool(await existing_bots(session, {bot_id}))


async def insert_lines(session: AsyncSession, lines: Sequence[LogLine]) -> int:
    """Insert the lines not stored yet (same bot, time and sequence); the caller commits."""
    if not lines:
        return 0
    dialect = session.get_bind().dialect.name
    values = [{"bot_id": x.bot_id, "ts": x.ts, "seq": x.seq, "level": x.level, "text": x.text} for x in lines]
    if dialect == "postgresql":
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(_INSERT_LOCK)))
        pg = postgresql.insert(BotLogLineRow).on_conflict_do_nothing(index_elements=["bot_id", "ts", "seq"])
        result = await session.execute(pg, values)
    else:
        lite = sqlite.insert(BotLogLineRow).on_conflict_do_nothing(index_elements=["bot_id", "ts", "seq"])
        result = await session.execute(lite, values)
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


async def page(
    session: AsyncSession,
    bot_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> Sequence[BotLogLineRow]:
    """Oldest first by (ts, id), strictly after ``after``."""
    query = sa.select(BotLogLineRow).where(BotLogLineRow.bot_id == bot_id)
    if since is not None:
        query = query.where(BotLogLineRow.ts >= since)
    if until is not None:
        query = query.where(BotLogLineRow.ts < until)
    if after is not None:
        query = query.where(sa.tuple_(BotLogLineRow.ts, BotLogLineRow.id) > sa.tuple_(
            sa.literal(after[0], BotLogLineRow.ts.type), sa.literal(after[1])))
    query = query.order_by(BotLogLineRow.ts, BotLogLineRow.id).limit(limit)
    return (await session.scalars(query)).all()


async def after_id(session: AsyncSession, bot_id: str, last_id: int, limit: int) -> Sequence[BotLogLineRow]:
    query = (sa.select(BotLogLineRow).where(BotLogLineRow.bot_id == bot_id, BotLogLineRow.id > last_id)
             .order_by(BotLogLineRow.id).limit(limit))
    return (await session.scalars(query)).all()


async def tail(session: AsyncSession, bot_id: str, count: int) -> Sequence[BotLogLineRow]:
    """The latest ``count`` lines, in ingestion order."""
    query = (sa.select(BotLogLineRow).where(BotLogLineRow.bot_id == bot_id)
             .order_by(BotLogLineRow.id.desc()).limit(count))
    return list(reversed((await session.scalars(query)).all()))


async def last_id(session: AsyncSession, bot_id: str) -> int:
    found = await session.scalar(sa.select(sa.func.max(BotLogLineRow.id)).where(BotLogLineRow.bot_id == bot_id))
    return int(found or 0)


async def prune_older_than(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(sa.delete(BotLogLineRow).where(BotLogLineRow.ts < cutoff))
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


async def prune_over_cap(session: AsyncSession, max_lines: int) -> int:
    """Keep the newest ``max_lines`` lines of each bot that has more."""
    over = await session.execute(
        sa.select(BotLogLineRow.bot_id).group_by(BotLogLineRow.bot_id).having(sa.func.count() > max_lines)
    )
    removed = 0
    for (bot_id,) in over.all():
        keep_from = await session.scalar(
            sa.select(BotLogLineRow.id).where(BotLogLineRow.bot_id == bot_id)
            .order_by(BotLogLineRow.id.desc()).offset(max_lines - 1).limit(1)
        )
        if keep_from is None:
            continue
        result = await session.execute(
            sa.delete(BotLogLineRow).where(BotLogLineRow.bot_id == bot_id, BotLogLineRow.id < keep_from)
        )
        removed += max(int(getattr(result, "rowcount", 0) or 0), 0)
    return removed
