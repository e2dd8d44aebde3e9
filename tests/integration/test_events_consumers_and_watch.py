"""Durable consumers and the watch hub against a real NATS server.

Consumers: explicit acks, redelivery after a transient failure, idempotency by
event id, poison events dropped. Watch hub: one wildcard subscription per
replica, fan-out across hubs, heartbeats, and catching up on a change whose
NATS message was lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as Nats
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from the0.server.background import BackgroundTasks
from the0.server.db.engine import create_engine, session_factory
from the0.server.events.consumer import DropEvent, EventConsumers, durable_name
from the0.server.events.envelope import Envelope
from the0.server.events.models import ProcessedEventRow
from the0.server.events.nats_connection import connect_nats, ensure_stream
from the0.server.events.watch_hub import HEARTBEAT, Snapshot, WatchHub
from the0.server.nats_link import NatsLink


@pytest.fixture
async def engine(tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    from the0.server.db.migrate import upgrade_to_head

    url = f"sqlite:///{tmp_path / 'events.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def nats(isolated_nats: Any) -> AsyncIterator[Nats]:
    client = await connect_nats(isolated_nats.url, name="consumer-test")
    await ensure_stream(client.jetstream())
    try:
        yield client
    finally:
        await client.close()


async def publish(nats: Nats, envelope: Envelope, msg_id: str | None = None) -> None:
    await nats.jetstream().publish(envelope.subject, envelope.to_json(),
                                   headers={"Nats-Msg-Id": msg_id or envelope.id})


async def test_consumer_retries_transient_failures_and_applies_once(engine: AsyncEngine, nats: Nats) -> None:
    sessions = session_factory(engine)
    applied: list[str] = []
    calls = 0

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        if envelope.data.get("poison"):
            raise DropEvent("nonsense")
        if envelope.data.get("flaky") and calls == 1:
            raise ConnectionError("database went away")
        applied.append(envelope.data["n"])

    consumers = EventConsumers(sessions, lambda: nats, retry_delay=0.2, fetch_timeout=0.2,
                               durable_prefix=f"t{uuid.uuid4().hex[:6]}")
    consumers.register("custom-bot.thing-happened", handler)
    flaky = Envelope(type="custom-bot.thing-happened", data={"n": "flaky", "flaky": True})
    twice = Envelope(type="custom-bot.thing-happened", data={"n": "twice"})
    await publish(nats, flaky)
    await publish(nats, twice)
    await publish(nats, twice, msg_id=str(uuid.uuid4()))  # same event, new message: a redelivery
    await publish(nats, Envelope(type="custom-bot.thing-happened", data={"poison": True}))
    await nats.jetstream().publish("the0.custom-bot.thing-happened", b"not json at all")
    tasks = BackgroundTasks()
    consumers.start(tasks)
    try:
        async with asyncio.timeout(10):
            while sorted(applied) != ["flaky", "twice"]:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # nothing else arrives
    finally:
        await tasks.stop()
    assert sorted(applied) == ["flaky", "twice"]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEventRow)) == 2
    info = await nats.jetstream().consumer_info("THE0_EVENTS", durable_name(consumers._durable_prefix, "custom-bot.thing-happened"))
    assert info.num_ack_pending == 0 and info.num_pending == 0  # everything acknowledged


class Resource:
    def __init__(self) -> None:
        self.etag, self.state = "e0", "OPEN"

    async def load(self) -> Snapshot[tuple[str, str]]:
        return Snapshot((self.etag, self.state), self.etag, self.state == "DONE")


async def _hub(url: str, heartbeat: float, tasks: BackgroundTasks) -> tuple[WatchHub, NatsLink]:
    link = NatsLink(url)
    link.start(tasks)
    hub = WatchHub(link, heartbeat_seconds=heartbeat)
    hub.start(tasks)
    await asyncio.wait_for(hub.subscribed.wait(), 5)
    return hub, link


async def _stop(tasks: BackgroundTasks, *hubs: tuple[WatchHub, NatsLink]) -> None:
    """In the App's order: background tasks, then each hub's teardown, then NATS."""
    await tasks.stop()
    for hub, link in hubs:
        await hub.stop()
        await link.close()


async def test_watch_hub_fans_out_across_replicas(isolated_nats: Any) -> None:
    tasks = BackgroundTasks()
    (hub_a, link_a), (hub_b, link_b) = await _hub(isolated_nats.url, 30, tasks), await _hub(isolated_nats.url, 30, tasks)
    resource = Resource()
    try:
        watchers = [hub_a.watch("thing", "r1", resource.load) for _ in range(50)]
        firsts = await asyncio.gather(*(anext(w) for w in watchers))
        assert set(firsts) == {("e0", "OPEN")}
        assert hub_a.watcher_count == 50
        resource.etag, resource.state = "e1", "DONE"
        hub_b.changed("thing", "r1", "e1")  # the change happened on replica B
        seconds = await asyncio.wait_for(asyncio.gather(*(anext(w) for w in watchers)), 2)
        assert set(seconds) == {("e1", "DONE")}
        for watcher in watchers:  # terminal: every stream ends
            with pytest.raises(StopAsyncIteration):
                await anext(watcher)
        assert hub_a.watcher_count == 0
    finally:
        await _stop(tasks, (hub_a, link_a), (hub_b, link_b))


async def test_watch_heartbeats_and_catches_up_on_a_lost_message(isolated_nats: Any) -> None:
    tasks = BackgroundTasks()
    hub, link = await _hub(isolated_nats.url, 0.2, tasks)
    resource = Resource()
    try:
        watch = hub.watch("thing", "r2", resource.load)
        assert await anext(watch) == ("e0", "OPEN")
        assert await asyncio.wait_for(anext(watch), 1) is HEARTBEAT
        resource.etag = "e1"  # changed, but no notification reached this replica
        assert await asyncio.wait_for(anext(watch), 1) == ("e1", "OPEN")
        await watch.aclose()
        assert hub.watcher_count == 0
    finally:
        await _stop(tasks, (hub, link))


async def test_watch_notifications_are_core_nats_outside_the_event_stream(isolated_nats: Any, nats: Nats) -> None:
    tasks = BackgroundTasks()
    hub, link = await _hub(isolated_nats.url, 30, tasks)
    received: list[str] = []
    async def collect(message: Any) -> None:
        assert orjson.loads(message.data) == {"etag": "etag-9"}
        received.append(message.subject)

    subscription = await nats.subscribe("the0-watch.>", cb=collect)
    await nats.flush()  # the server has our SUB before the hub publishes
    try:
        hub.changed("thing", "r3", "etag-9")
        async with asyncio.timeout(3):
            while not received:
                await asyncio.sleep(0.02)
        assert received == ["the0-watch.thing.r3"]
        info = await nats.jetstream().stream_info("THE0_EVENTS")
        assert info.state.messages == 0
    finally:
        await subscription.unsubscribe()
        await _stop(tasks, (hub, link))

