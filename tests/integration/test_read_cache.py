"""The read cache's rules on a real watch hub and a real NATS (events/read_cache.py).

Two hubs on one NATS stand for two replicas: a change announced on one drops the other's entry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from the0.server.background import BackgroundTasks
from the0.server.errors import NotFound
from the0.server.events.read_cache import ReadCache
from the0.server.events.watch_hub import WatchHub
from the0.server.nats_link import NatsLink


class Counted:
    """A loader that returns the current value and counts its reads."""

    def __init__(self, value: str) -> None:
        self.value, self.reads = value, 0

    async def __call__(self) -> str:
        self.reads += 1
        return self.value


@pytest.fixture
async def hubs(isolated_nats: Any) -> AsyncIterator[tuple[WatchHub, WatchHub, list[NatsLink]]]:
    tasks = BackgroundTasks()
    links = [NatsLink(isolated_nats.url), NatsLink(isolated_nats.url)]
    made = []
    for link in links:
        link.start(tasks)
        hub = WatchHub(link)
        hub.start(tasks)
        made.append(hub)
    for hub in made:
        await asyncio.wait_for(hub.subscribed.wait(), 10)
    try:
        yield made[0], made[1], links
    finally:
        await tasks.stop()
        for hub in made:
            await hub.stop()
        for link in links:
            await link.close()


async def test_a_second_read_is_served_from_the_cache(hubs: Any) -> None:
    hub, _, _ = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot")
    load = Counted("v1")
    assert [await cache.get("alice", "b1", load) for _ in range(3)] == ["v1"] * 3
    assert load.reads == 1 and cache.hits == 2


async def test_a_change_on_another_replica_drops_the_entry_within_the_fanout_delay(hubs: Any) -> None:
    here, there, _ = hubs
    cache: ReadCache[str] = ReadCache(here, "bot", ttl_seconds=60)
    load = Counted("v1")
    await cache.get("alice", "b1", load)
    load.value = "v2"
    there.changed("bot", "b1", "etag-2")
    async with asyncio.timeout(2):  # the fan-out is one NATS publish; 60 s of TTL would not save this
        while await cache.get("alice", "b1", load) != "v2":
            await asyncio.sleep(0.005)
    assert load.reads == 2


async def test_an_entry_is_never_served_to_another_owner(hubs: Any) -> None:
    hub, _, _ = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot")
    await cache.get("alice", "b1", Counted("alice's"))

    async def not_theirs() -> str:
        raise NotFound("bot 'b1' not found")

    with pytest.raises(NotFound):
        await cache.get("mallory", "b1", not_theirs)


async def test_errors_are_not_cached(hubs: Any) -> None:
    hub, _, _ = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot")
    reads = 0

    async def missing() -> str:
        nonlocal reads
        reads += 1
        raise NotFound("no such bot")

    for _ in range(2):
        with pytest.raises(NotFound):
            await cache.get("alice", "b1", missing)
    assert reads == 2


async def test_a_load_that_overlaps_a_change_is_returned_but_not_kept(hubs: Any) -> None:
    hub, _, _ = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot", ttl_seconds=60)
    release = asyncio.Event()

    async def slow_old_read() -> str:
        await release.wait()
        return "read before the change committed"

    pending = asyncio.create_task(cache.get("alice", "b1", slow_old_read))
    await asyncio.sleep(0.01)
    hub.changed("bot", "b1", "etag-2")
    release.set()
    assert await pending == "read before the change committed"
    fresh = Counted("after the change")
    assert await cache.get("alice", "b1", fresh) == "after the change" and fresh.reads == 1


async def test_concurrent_misses_share_one_read(hubs: Any) -> None:
    hub, _, _ = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot")
    reads = 0

    async def load() -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.02)
        return "v1"

    assert await asyncio.gather(*(cache.get("alice", "b1", load) for _ in range(20))) == ["v1"] * 20
    assert reads == 1


async def test_entries_expire_after_the_ttl(hubs: Any) -> None:
    hub, _, _ = hubs
    now = [1000.0]
    cache: ReadCache[str] = ReadCache(hub, "bot", ttl_seconds=5, clock=lambda: now[0])
    load = Counted("v1")
    await cache.get("alice", "b1", load)
    now[0] += 4.9
    await cache.get("alice", "b1", load)
    assert load.reads == 1
    now[0] += 0.2
    await cache.get("alice", "b1", load)
    assert load.reads == 2


async def test_nothing_is_served_from_the_cache_while_nats_is_away_nor_after_a_reconnect(
    hubs: Any, isolated_nats: Any
) -> None:
    hub, _, links = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot", ttl_seconds=60)
    load = Counted("v1")
    await cache.get("alice", "b1", load)
    await isolated_nats.stop()
    async with asyncio.timeout(10):
        while links[0].client is not None and links[0].client.is_connected:
            await asyncio.sleep(0.05)
    # Changes made on other replicas now cannot arrive: every read goes to the source.
    load.value = "changed while away"
    assert await cache.get("alice", "b1", load) == "changed while away"
    assert await cache.get("alice", "b1", load) == "changed while away"
    assert load.reads == 3
    await isolated_nats.restart()
    async with asyncio.timeout(20):
        while hub.fanout_epoch() is None:
            await asyncio.sleep(0.05)
    load.value = "v3"
    assert await cache.get("alice", "b1", load) == "v3"  # the entry from before the reconnect is not used
    assert load.reads == 4


async def test_a_ttl_of_zero_turns_the_cache_off(hubs: Any) -> None:
    hub, _, _ = hubs
    cache: ReadCache[str] = ReadCache(hub, "bot", ttl_seconds=0)
    load = Counted(uuid.uuid4().hex)
    for _ in range(3):
        await cache.get("alice", "b1", load)
    assert load.reads == 3
