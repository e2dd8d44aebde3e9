"""The outbox relay against a real JetStream: batches, Nats-Msg-Id, NATS outages, crashes.

Nothing lost, nothing duplicated: every committed outbox row ends up in the
stream exactly once, whatever stops in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as Nats
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from the0.server.background import BackgroundTasks
from the0.server.db.engine import create_engine, session_factory
from the0.server.events.models import OutboxRow
from the0.server.events.nats_connection import EVENTS_STREAM, connect_nats, ensure_stream
from the0.server.events.outbox import Outbox
from the0.server.events.relay import OutboxRelay


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def nats(isolated_nats: Any) -> AsyncIterator[Nats]:
    client = await connect_nats(isolated_nats.url, name="relay-test")
    await ensure_stream(client.jetstream())
    try:
        yield client
    finally:
        await client.close()


async def add_events(sessions: async_sessionmaker[AsyncSession], outbox: Outbox, count: int,
                     prefix: str = "e") -> list[str]:
    ids = []
    async with sessions() as session, session.begin():
        for i in range(count):
            ids.append(outbox.add(session, "backtest.test-happened", {"n": i, "prefix": prefix}).id)
    return ids


async def stream_ids(nats: Nats) -> list[str]:
    """Every message id in the stream, in order (via an ephemeral ordered read)."""
    js = nats.jetstream()
    info = await js.stream_info(EVENTS_STREAM)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        message = await js.get_msg(EVENTS_STREAM, seq)
        ids.append(message.headers["Nats-Msg-Id"])
    return ids


async def unsent(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))) or 0)


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_relay_publishes_in_batches_with_message_ids(engine: AsyncEngine, nats: Nats) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    ids = await add_events(sessions, outbox, 120)
    relay = OutboxRelay(sessions, outbox, lambda: nats, batch_size=50)
    assert await relay.publish_pending() == 50
    tasks = BackgroundTasks()
    relay.start(tasks)
    try:
        await eventually(lambda: _done(sessions))
    finally:
        await tasks.stop()
    assert await stream_ids(nats) == ids
    message = await nats.jetstream().get_msg(EVENTS_STREAM, (await nats.jetstream().stream_info(EVENTS_STREAM)).state.first_seq)
    assert message.subject == "the0.backtest.test-happened"
    body = orjson.loads(message.data)
    assert set(body) == {"id", "type", "data", "timestamp", "correlationId"}
    assert body["id"] == ids[0] and body["data"] == {"n": 0, "prefix": "e"}


async def _done(sessions: async_sessionmaker[AsyncSession]) -> bool:
    return await unsent(sessions) == 0


async def test_a_commit_wakes_the_relay_at_once(engine: AsyncEngine, nats: Nats) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    relay = OutboxRelay(sessions, outbox, lambda: nats, poll_seconds=60)  # only the wake-up can do it
    tasks = BackgroundTasks()
    relay.start(tasks)
    try:
        await asyncio.sleep(0.1)
        ids = await add_events(sessions, outbox, 3)
        await eventually(lambda: _done(sessions), timeout=3)
    finally:
        await tasks.stop()
    assert await stream_ids(nats) == ids


async def test_a_rolled_back_transaction_publishes_nothing(engine: AsyncEngine, nats: Nats) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    async with sessions() as session, session.begin():
        outbox.add(session, "backtest.test-happened", {})
        await session.rollback()
    relay = OutboxRelay(sessions, outbox, lambda: nats)
    assert await relay.publish_pending() == 0
    assert await stream_ids(nats) == []


async def test_nats_down_events_wait_then_arrive_exactly_once(engine: AsyncEngine, nats: Nats,
                                                              isolated_nats: Any) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    before = await add_events(sessions, outbox, 5, "before")
    relay = OutboxRelay(sessions, outbox, lambda: nats, poll_seconds=0.2, ack_timeout=1.0)
    tasks = BackgroundTasks()
    relay.start(tasks)
    try:
        await eventually(lambda: _done(sessions))
        await isolated_nats.stop()
        during = await add_events(sessions, outbox, 7, "during")  # commits succeed with NATS down
        await asyncio.sleep(0.5)
        assert await unsent(sessions) == 7
        await isolated_nats.start()
        await eventually(lambda: _done(sessions), timeout=15)
    finally:
        await tasks.stop()
    assert await stream_ids(nats) == before + during


class Crash(Exception):
    pass


async def test_a_relay_killed_after_publishing_duplicates_nothing(engine: AsyncEngine, nats: Nats) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    ids = await add_events(sessions, outbox, 10)

    def crash(_: list[str]) -> None:
        raise Crash  # between "published" and "marked sent"

    crashing = OutboxRelay(sessions, outbox, lambda: nats, before_mark_sent=crash)
    with pytest.raises(Crash):
        await crashing.publish_pending()
    assert await unsent(sessions) == 10  # nothing marked
    assert await stream_ids(nats) == ids  # but published
    restarted = OutboxRelay(sessions, outbox, lambda: nats)
    assert await restarted.publish_pending() == 10
    assert await unsent(sessions) == 0
    assert await stream_ids(nats) == ids  # JetStream dropped the duplicates by Nats-Msg-Id


async def test_a_relay_killed_before_publishing_loses_nothing(engine: AsyncEngine, nats: Nats) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    ids = await add_events(sessions, outbox, 4)  # committed; no relay ran (it "died" before publishing)
    relay = OutboxRelay(sessions, outbox, lambda: nats, poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _done(sessions))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await stream_ids(nats) == ids


async def test_two_relays_share_the_work(engine: AsyncEngine, nats: Nats) -> None:
    sessions, outbox = session_factory(engine), Outbox()
    ids = await add_events(sessions, outbox, 300)
    relays = [OutboxRelay(sessions, outbox, lambda: nats, batch_size=20) for _ in range(2)]
    tasks = BackgroundTasks()
    for relay in relays:
        relay.start(tasks)
    try:
        await eventually(lambda: _done(sessions))
    finally:
        await tasks.stop()
    assert sorted(await stream_ids(nats)) == sorted(ids)
    assert sum(r.published_total for r in relays) >= 300
