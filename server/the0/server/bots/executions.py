"""Execution history of bots: one row per (bot, execution), as the runtime reported it.

The runtime events (events.py) write here inside the consumer's transaction,
which already holds the bot row ``FOR UPDATE``: events of one bot are applied
one at a time, so "read the row, then insert or update it" needs no ON CONFLICT,
and ``started``/``completed`` in either order and redeliveries meet in one row.

Bounded twice: at most ``max_per_bot`` rows per bot (the oldest go when a new
execution arrives, so a bot run every minute cannot grow its history between
prunes) and rows older than the retention, deleted by a background task.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from the0.server.bots.repository import BotRepository
from the0.server.db.models import Base, UTCDateTime
from the0.server.db.repository import OwnedRepository
from the0.server.db.sessions import autocommit_sessions
from the0.server.errors import NotFound
from the0.server.pagination import Cursor, PageTokens, page_size

log = logging.getLogger("the0.bots.executions")

PRUNE_EVERY_SECONDS = 600.0
# Rows deleted per statement by the age prune: short transactions, no long lock on the table.
PRUNE_BATCH = 1000


class BotExecutionRow(Base):
    __tablename__ = "bot_executions"
    __table_args__ = (
        UniqueConstraint("bot_id", "execution_id"),
        Index("ix_bot_executions_bot_id_sort_time_id", "bot_id", "sort_time", "id"),
        Index("ix_bot_executions_sort_time", "sort_time"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The runtime's id; a failure reported without one is keyed by its event id.
    execution_id: Mapped[str] = mapped_column(String(200))
    # RUNNING | COMPLETED | FAILED
    state: Mapped[str] = mapped_column(String(16))
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The page order: the start when known, else the end (a `completed` that arrived first).
    sort_time: Mapped[datetime] = mapped_column(UTCDateTime())
    # At most 64 KiB, checked when the event is read (events.MAX_RESULT_BYTES).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass(frozen=True, slots=True)
class BotExecution:
    id: str
    state: str
    start_time: datetime | None
    end_time: datetime | None
    result: dict[str, Any] | None
    error: str | None

    @classmethod
    def from_row(cls, row: BotExecutionRow) -> BotExecution:
        return cls(
            id=row.execution_id,
            state=row.state,
            start_time=row.start_time,
            end_time=row.end_time,
            result=dict(row.result) if row.result is not None else None,
            error=row.error,
        )


@dataclass(frozen=True, slots=True)
class BotExecutionPage:
    executions: list[BotExecution]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What one runtime event says about one execution; None means "not said"."""

    execution_id: str
    state: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


_FINISHED = ("COMPLETED", "FAILED")


async def record(session: AsyncSession, *, bot_id: str, owner_id: str, report: ExecutionReport,
                 max_per_bot: int) -> None:
    """Insert or merge one report, in the caller's transaction (which holds the bot row locked)."""
    row = await session.scalar(
        select(BotExecutionRow).where(
            BotExecutionRow.bot_id == bot_id, BotExecutionRow.execution_id == report.execution_id
        )
    )
    if row is None:
        first = report.start_time or report.end_time or datetime.now(UTC)
        session.add(
            BotExecutionRow(
                id=str(uuid.uuid4()), bot_id=bot_id, owner_id=owner_id, execution_id=report.execution_id,
                state=report.state, start_time=report.start_time, end_time=report.end_time,
                sort_time=first, result=report.result, error=report.error,
            )
        )
        await session.flush()
        await _cap(session, bot_id, max_per_bot)
        return
    # A finished execution stays finished: a late or redelivered `started` only adds its start.
    if row.state not in _FINISHED or report.state in _FINISHED:
        row.state = report.state
    if report.start_time is not None and row.start_time is None:
        row.start_time = report.start_time
        row.sort_time = report.start_time
    if report.end_time is not None:
        row.end_time = report.end_time
    if report.result is not None:
        row.result = report.result
    if report.error is not None:
        row.error = report.error


async def _cap(session: AsyncSession, bot_id: str, max_per_bot: int) -> None:
    """Delete this bot's executions beyond the newest ``max_per_bot`` (one indexed statement)."""
    beyond = (
        select(BotExecutionRow.id)
        .where(BotExecutionRow.bot_id == bot_id)
        .order_by(BotExecutionRow.sort_time.desc(), BotExecutionRow.id.desc())
        .offset(max_per_bot)
        .scalar_subquery()
    )
    await session.execute(
        delete(BotExecutionRow).where(BotExecutionRow.id.in_(beyond)).execution_options(synchronize_session=False)
    )


async def prune_older_than(session: AsyncSession, cutoff: datetime, *, batch: int = PRUNE_BATCH) -> int:
    """Delete up to ``batch`` executions whose sort time is before ``cutoff``; how many went."""
    old = select(BotExecutionRow.id).where(BotExecutionRow.sort_time < cutoff).limit(batch).scalar_subquery()
    outcome = await session.execute(
        delete(BotExecutionRow).where(BotExecutionRow.id.in_(old)).execution_options(synchronize_session=False)
    )
    return int(getattr(outcome, "rowcount", 0) or 0)


class BotExecutionRepository(OwnedRepository[BotExecutionRow]):
    """The executions of one owner's bots; someone else's do not exist here."""

    row_type = BotExecutionRow
    created_column = "sort_time"

    async def list_page(self, bot_id: str, *, after: Cursor | None, limit: int) -> Sequence[BotExecutionRow]:
        return await self._page(self._base().where(BotExecutionRow.bot_id == bot_id), after, limit)


class BotExecutions:
    """ListBotExecutions and the retention of the history."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        page_tokens: PageTokens,
        retention: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._read_sessions = autocommit_sessions(sessions)
        self._page_tokens = page_tokens
        self._retention = retention
        self._clock = clock

    async def list(self, owner_id: str, bot_id: str, *, requested_page_size: int, page_token: str) -> BotExecutionPage:
        limit = page_size(requested_page_size)
        scope = f"bots.executions:{bot_id}"  # a token of one bot's history is refused for another's
        after = self._page_tokens.decode(page_token, scope=scope)
        async with self._read_sessions() as session:
            if await BotRepository(session, owner_id).get(bot_id) is None:
                raise NotFound(f"bot {bot_id!r} not found", metadata={"id": bot_id})
            rows = list(await BotExecutionRepository(session, owner_id).list_page(bot_id, after=after, limit=limit + 1))
            rows, next_token = self._page_tokens.page(
                rows, limit, scope=scope, cursor=lambda row: Cursor(row.sort_time, row.id)
            )
            return BotExecutionPage([BotExecution.from_row(row) for row in rows], next_token)

    async def prune_once(self) -> int:
        """Delete every execution older than the retention, batch by batch; how many went."""
        cutoff = self._clock() - self._retention
        removed = 0
        while True:
            async with self._sessions() as session, session.begin():
                count = await prune_older_than(session, cutoff, batch=PRUNE_BATCH)
            removed += count
            if count < PRUNE_BATCH:
                return removed

    async def prune_forever(self) -> None:
        """Background task: every replica prunes (deletes are idempotent); a failure waits for the next round."""
        while True:
            await asyncio.sleep(PRUNE_EVERY_SECONDS)
            try:
                removed = await self.prune_once()
            except Exception as error:  # noqa: BLE001 - the database may be down; try again later
                log.warning("pruning bot executions failed", extra={"error": type(error).__name__})
            else:
                log.debug("bot executions pruned", extra={"removed": removed})
