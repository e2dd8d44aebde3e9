"""Bot logs against real NATS and SQLite/PostgreSQL: ingest, restarts, cursors, owners, import."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.test_bots_support import add_user
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.server.background import BackgroundTasks
from the0.server.bot_logs import repository
from the0.server.bot_logs.import_days import import_directory
from the0.server.bot_logs.ingest import LogIngest
from the0.server.bot_logs.lines import MAX_LINE_BYTES, LogLine
from the0.server.bot_logs.models import BotLogLineRow
from the0.server.bot_logs.service import BotLogsService, LogLineValue, LogWakeups
from the0.server.bots.models import BotRow
from the0.server.db.engine import create_engine, session_factory
from the0.server.errors import NotFound
from the0.server.events.nats_connection import connect_nats
from the0.server.nats_link import NatsLink
from the0.server.pagination import PageTokens


async def add_bot(sessions: async_sessionmaker[AsyncSession], owner: str) -> str:
    bot_id = str(uuid.uuid4())
    async with sessions() as session, session.begin():
        session.add(BotRow(id=bot_id, owner_id=owner, name="b", config={}, state="RUNNING",
                           custom_bot_id=str(uuid.uuid4()), etag="e"))
    return bot_id


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def service(sessions: async_sessionmaker[AsyncSession], wakeups: LogWakeups | None = None) -> BotLogsService:
    return BotLogsService(sessions, PageTokens(b"k"), wakeups or LogWakeups(None), retention=timedelta(days=30),
                          max_lines_per_bot=1000, heartbeat_seconds=5, poll_seconds=0.1)


async def texts(sessions: async_sessionmaker[AsyncSession], bot_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(sa.select(BotLogLineRow.text).where(BotLogLineRow.bot_id == bot_id)
                                     .order_by(BotLogLineRow.id))
        return list(rows)


def line(i: int) -> bytes:
    return orjson.dumps({"time": f"2026-12-01T10:00:{i % 60:02d}.{i:06d}+00:00", "level": "info",
                         "text": f"line {i}", "seq": i})


async def test_lines_published_across_a_nats_restart_are_neither_lost_nor_doubled(
    sessions: async_sessionmaker[AsyncSession], isolated_nats: EmbeddedNats
) -> None:
    bot_id = await add_bot(sessions, await add_user(sessions))
    link = NatsLink(isolated_nats.url)
    tasks = BackgroundTasks()
    link.start(tasks)
    ingest = LogIngest(sessions, link, max_age=timedelta(days=1), max_bytes=64 * 1024 * 1024,
                       on_ingested=lambda _: None)
    tasks.spawn("ingest", ingest.run())
    publisher = await connect_nats(isolated_nats.url, name="runtime")
    try:
        await asyncio.wait_for(ingest.stream_ready.wait(), 10)
        js = publisher.jetstream()
        for i in range(50):
            await js.publish(f"the0.bot.logs.{bot_id}", line(i))
        await isolated_nats.restart()
        for i in range(50, 100):
            for _ in range(50):  # the runtime retries until JetStream acknowledges
                try:
                    await js.publish(f"the0.bot.logs.{bot_id}", line(i), timeout=1)
                    break
                except Exception:  # noqa: BLE001 - reconnecting
                    await asyncio.sleep(0.2)
        # A runtime that republishes lines it was unsure of (no ack seen) must not double them.
        for i in range(40, 60):
            await js.publish(f"the0.bot.logs.{bot_id}", line(i))
        # Generous: on a loaded two-core CI machine the consumer's reconnect after the restart can be slow;
        # what is asserted is that every line arrives exactly once.
        async with asyncio.timeout(60):
            while len(await texts(sessions, bot_id)) < 100:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stored = await texts(sessions, bot_id)
        assert sorted(stored) == sorted(f"line {i}" for i in range(100))
    finally:
        await publisher.close()
        await tasks.stop()
        await link.close()


async def store(sessions: async_sessionmaker[AsyncSession], bot_id: str, first: int, count: int) -> None:
    base = datetime(2026, 12, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        await repository.insert_lines(session, [
            LogLine(bot_id, base + timedelta(seconds=i), i, "info", f"line {i}") for i in range(first, first + count)
        ])


async def test_a_stream_resuming_from_its_cursor_gets_exactly_the_missing_lines(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    owner = await add_user(sessions)
    bot_id = await add_bot(sessions, owner)
    wakeups = LogWakeups(None)
    logs = service(sessions, wakeups)
    await store(sessions, bot_id, 0, 10)
    seen: list[LogLineValue] = []
    stream = logs.stream(owner, bot_id, tail_lines=3, after_cursor="")
    for _ in range(3):
        item = await anext(stream)
        assert isinstance(item, LogLineValue)
        seen.append(item)
    await stream.aclose()
    assert [x.text for x in seen] == ["line 7", "line 8", "line 9"]
    # Offline meanwhile: five lines arrive.
    await store(sessions, bot_id, 10, 5)
    resumed = logs.stream(owner, bot_id, tail_lines=3, after_cursor=seen[-1].cursor)
    got = [await anext(resumed) for _ in range(5)]
    assert [x.text for x in got if isinstance(x, LogLineValue)] == [f"line {i}" for i in range(10, 15)]
    # Live: a new line is delivered after the wake-up, once.
    await store(sessions, bot_id, 15, 1)
    wakeups.wake({bot_id})
    live = await asyncio.wait_for(anext(resumed), 5)
    assert isinstance(live, LogLineValue) and live.text == "line 15"
    await resumed.aclose()


async def test_list_pages_oldest_first_over_a_time_range(sessions: async_sessionmaker[AsyncSession]) -> None:
    owner = await add_user(sessions)
    bot_id = await add_bot(sessions, owner)
    await store(sessions, bot_id, 0, 25)
    logs = service(sessions)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    since, until = base + timedelta(seconds=5), base + timedelta(seconds=20)
    got: list[str] = []
    token = ""
    while True:
        page = await logs.list(owner, bot_id, since=since, until=until, page_size=4, page_token=token)
        got += [x.text for x in page.lines]
        token = page.next_page_token
        if not token:
            break
    assert got == [f"line {i}" for i in range(5, 20)]


async def test_another_users_bot_is_not_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    bot_id = await add_bot(sessions, await add_user(sessions))
    stranger = await add_user(sessions)
    logs = service(sessions)
    with pytest.raises(NotFound) as listed:
        await logs.list(stranger, bot_id, since=None, until=None, page_size=0, page_token="")
    assert listed.value.code == grpc.StatusCode.NOT_FOUND and listed.value.reason == "NOT_FOUND"
    with pytest.raises(NotFound) as streamed:
        await anext(logs.stream(stranger, bot_id, tail_lines=0, after_cursor=""))
    assert streamed.value.reason == "NOT_FOUND"


async def test_import_of_day_files_is_idempotent_and_cleans_lines(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    bot_id = await add_bot(sessions, await add_user(sessions))
    day = tmp_path / bot_id
    day.mkdir()
    (day / "20250102.log").write_text(
        "[2025-01-02T10:00:00Z] started\n[2025-01-02T10:00:01Z] bad\x00byte\n"
        f"[2025-01-02T10:00:02Z] {'x' * (MAX_LINE_BYTES + 100)}\n"
    )
    (tmp_path / str(uuid.uuid4())).mkdir()  # a bot unknown here: skipped
    await import_directory(sessions, tmp_path)
    await import_directory(sessions, tmp_path)
    stored = await texts(sessions, bot_id)
    assert stored[:2] == ["started", "badbyte"] and len(stored) == 3
    assert len(stored[2].encode()) == MAX_LINE_BYTES
