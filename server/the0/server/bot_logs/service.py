"""ListBotLogs and StreamBotLogs over the table, and the retention of lines.

A stream reads the table after its cursor (the line id), so it shows the same
lines whichever replica ingested them. It waits between reads for a wake-up
(``the0-logs.<botId>`` on core NATS after an ingest commit, or a local one) and
reads anyway every POLL_SECONDS, so a wake-up lost while NATS was away costs
at most that much delay, never a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.bot_logs import repository
from the0.server.bot_logs.ingest import INGESTED_PREFIX
from the0.server.bot_logs.models import BotLogLineRow
from the0.server.errors import FieldViolation, InvalidArgument, NotFound
from the0.server.nats_link import NatsLink
from the0.server.pagination import Cursor, PageTokens

log = logging.getLogger("the0.bot_logs")

DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000
DEFAULT_TAIL_LINES = 100
STREAM_READ_LINES = 500
POLL_SECONDS = 2.0
PRUNE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class LogLineValue:
    time: datetime
    level: str
    text: str
    cursor: str


@dataclass(frozen=True, slots=True)
class LogPage:
    lines: list[LogLineValue]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class LogHeartbeat:
    pass


@dataclass(frozen=True, slots=True)
class LogBotDeleted:
    bot_id: str
    time: datetime


class LogWakeups:
    """One wildcard subscription per replica; wakes the local streams of a bot."""

    def __init__(self, nats: NatsLink | None) -> None:
        self._nats = nats
        self._waiters: dict[str, set[asyncio.Event]] = {}

    async def subscribe(self) -> None:
        if self._nats is None:
            return
        await self._nats.connected.wait()
        if self._nats.client is not None:
            await self._nats.client.subscribe(f"{INGESTED_PREFIX}.>", cb=self._on_message)

    async def _on_message(self, message: Msg) -> None:
        self.wake({message.subject[len(INGESTED_PREFIX) + 1:]})

    def wake(self, bot_ids: set[str]) -> None:
        for bot_id in bot_ids:
            for event in self._waiters.get(bot_id, ()):
                event.set()

    def register(self, bot_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(bot_id, set()).add(event)
        return event

    def unregister(self, bot_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(bot_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[bot_id]


def _not_found(bot_id: str) -> NotFound:
    return NotFound(f"bot {bot_id} not found", metadata={"resource": "bot", "id": bot_id})


class BotLogsService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        page_tokens: PageTokens,
        wakeups: LogWakeups,
        *,
        retention: timedelta,
        max_lines_per_bot: int,
        heartbeat_seconds: float = 25.0,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._sessions = sessions
        self._tokens = page_tokens
        self._wakeups = wakeups
        self._retention = retention
        self._max_lines = max_lines_per_bot
        self._heartbeat = heartbeat_seconds
        self._poll = poll_seconds

    def _line(self, row: BotLogLineRow, cursor_id: int | None = None) -> LogLineValue:
        position = row.id if cursor_id is None else cursor_id
        cursor = self._tokens.encode(Cursor(row.ts, str(position)), scope=f"bot-log-line:{row.bot_id}")
        return LogLineValue(time=row.ts, level=row.level, text=row.text, cursor=cursor)

    def _in_time_order(self, rows: Sequence[BotLogLineRow]) -> Iterator[tuple[BotLogLineRow, int]]:
        """One read's lines in time order, each with the cursor to resume after it.

        Replicas ingest in parallel, so ingestion ids (what a resume counts on) need not follow the
        lines' own times. A line's cursor is the highest id up to which every line of this read has
        been sent, so a client resuming from any line it saw misses nothing and sees nothing twice.
        """
        pending = sorted(row.id for row in rows)
        sent: set[int] = set()
        done = 0
        floor = pending[0] - 1 if pending else 0
        for row in sorted(rows, key=lambda r: (r.ts, r.seq, r.id)):
            sent.add(row.id)
            while done < len(pending) and pending[done] in sent:
                done += 1
            yield row, pending[done - 1] if done else floor

    async def _check_owner(self, session: AsyncSession, owner_id: str, bot_id: str) -> None:
        if not await repository.owns_bot(session, owner_id, bot_id):
            raise _not_found(bot_id)

    async def list(
        self, owner_id: str, bot_id: str, *, since: datetime | None, until: datetime | None,
        page_size: int, page_token: str,
    ) -> LogPage:
        if page_size < 0:
            raise InvalidArgument("pageSize must not be negative", violations=[
                FieldViolation("pageSize", f"must be 0 to {MAX_PAGE_SIZE}, got {page_size}")])
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = f"bot-logs:{bot_id}:{since.isoformat() if since else ''}:{until.isoformat() if until else ''}"
        cursor = self._tokens.decode(page_token, scope=scope)
        after = (cursor.create_time, int(cursor.id)) if cursor is not None else None
        async with self._sessions() as session:
            await self._check_owner(session, owner_id, bot_id)
            rows = await repository.page(session, bot_id, since=since, until=until, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        token = ""
        if more and rows:
            token = self._tokens.encode(Cursor(rows[-1].ts, str(rows[-1].id)), scope=scope)
        return LogPage([self._line(r) for r in rows], token)

    async def stream(
        self, owner_id: str, bot_id: str, *, tail_lines: int, after_cursor: str,
    ) -> AsyncGenerator[LogLineValue | LogHeartbeat | LogBotDeleted, None]:
        """The tail (or every line after the cursor), then new lines; ends with LogBotDeleted."""
        start = self._tokens.decode(after_cursor, scope=f"bot-log-line:{bot_id}") if after_cursor else None
        # Registered before the first read, so a line ingested between the two is not missed.
        signal = self._wakeups.register(bot_id)
        try:
            first: Sequence[BotLogLineRow]
            async with self._sessions() as session:
                await self._check_owner(session, owner_id, bot_id)
                if start is not None:
                    last = int(start.id)
                    first = await repository.after_id(session, bot_id, last, STREAM_READ_LINES)
                else:
                    first = await repository.tail(session, bot_id, tail_lines or DEFAULT_TAIL_LINES)
                    last = first[-1].id if first else await repository.last_id(session, bot_id)
            for row, cursor_id in self._in_time_order(first):
                last = max(last, row.id)
                yield self._line(row, cursor_id)
            last_sent = time.monotonic()
            while True:
                async with self._sessions() as session:
                    rows = await repository.after_id(session, bot_id, last, STREAM_READ_LINES)
                    gone = not rows and not await repository.bot_exists(session, bot_id)
                if gone:
                    yield LogBotDeleted(bot_id, datetime.now(UTC))
                    return
                for row, cursor_id in self._in_time_order(rows):
                    last = max(last, row.id)
                    yield self._line(row, cursor_id)
                if rows:
                    last_sent = time.monotonic()
                    if len(rows) == STREAM_READ_LINES:
                        continue
                if time.monotonic() - last_sent >= self._heartbeat:
                    last_sent = time.monotonic()
                    yield LogHeartbeat()
                wait = min(self._poll, max(last_sent + self._heartbeat - time.monotonic(), 0.0))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await signal.wait()
                signal.clear()
        finally:
            self._wakeups.unregister(bot_id, signal)

    async def prune_once(self) -> int:
        async with self._sessions() as session, session.begin():
            removed = await repository.prune_older_than(session, datetime.now(UTC) - self._retention)
            removed += await repository.prune_over_cap(session, self._max_lines)
        return removed

    async def prune_forever(self, every_seconds: float = PRUNE_SECONDS) -> None:
        while True:
            try:
                removed = await self.prune_once()
                if removed:
                    log.info("bot log lines pruned", extra={"lines": removed})
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away: next round
                log.warning("bot log pruning failed", exc_info=True)
            await asyncio.sleep(every_seconds)
