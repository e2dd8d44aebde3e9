"""A per-replica cache of rendered resources, kept true by the watch hub's fan-out.

``get(owner_id, resource_id, load)`` serves the value this replica last rendered for that
owner's resource, or loads it. Every committed change already reaches every replica's
watch hub (locally at once, from other replicas over core NATS); the hub tells this cache,
which drops the entry. So a read on another replica is stale for at most the fan-out delay
(a NATS publish, milliseconds). Two safety nets bound what the fan-out cannot promise:

- an entry lives ``ttl_seconds`` at most (core NATS may drop a message for a slow consumer);
- while the fan-out is not live (NATS disconnected, the hub not yet subscribed) nothing is
  served from the cache, and an entry stored before a reconnect is never served after it
  (changes published while this replica was away were missed).

A load that overlaps an invalidation of its key is returned but not stored: it may have
read the row just before the change committed. Concurrent misses of one key share one load.
Nothing but values is kept: errors (NotFound) are never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

from the0.server.events.watch_hub import WatchHub

V = TypeVar("V")

DEFAULT_TTL_SECONDS = 5.0
DEFAULT_MAX_ENTRIES = 20_000


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    owner_id: str
    value: V
    stored_at: float
    epoch: int


class ReadCache(Generic[V]):
    def __init__(
        self,
        hub: WatchHub,
        kind: str,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: LRUCache[str, _Entry[V]] = LRUCache(maxsize=max_entries)
        self._loads: dict[tuple[str, str], asyncio.Future[V]] = {}
        # Per key, how many invalidations so far: a load stores only if none came meanwhile.
        self._invalidations: dict[str, int] = {}
        self.hits = self.misses = 0
        hub.on_change(kind, self.invalidate)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def invalidate(self, resource_id: str) -> None:
        self._entries.pop(resource_id, None)
        if self._loads_of(resource_id):
            self._invalidations[resource_id] = self._invalidations.get(resource_id, 0) + 1

    def _loads_of(self, resource_id: str) -> bool:
        return any(key[1] == resource_id for key in self._loads)

    async def get(self, owner_id: str, resource_id: str, load: Callable[[], Awaitable[V]]) -> V:
        epoch = self._hub.fanout_epoch() if self.enabled else None
        if epoch is None:
            return await load()
        entry = self._entries.get(resource_id)
        if (
            entry is not None
            and entry.owner_id == owner_id
            and entry.epoch == epoch
            and self._clock() - entry.stored_at < self._ttl
        ):
            self.hits += 1
            return entry.value
        self.misses += 1
        key = (owner_id, resource_id)
        shared = self._loads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._load_and_store(owner_id, resource_id, epoch, load))
            self._loads[key] = shared
            shared.add_done_callback(lambda _done: self._forget_load(key))
        return await asyncio.shield(shared)

    def _forget_load(self, key: tuple[str, str]) -> None:
        self._loads.pop(key, None)
        if not self._loads_of(key[1]):
            self._invalidations.pop(key[1], None)

    async def _load_and_store(
        self, owner_id: str, resource_id: str, epoch: int, load: Callable[[], Awaitable[V]]
    ) -> V:
        before = self._invalidations.get(resource_id, 0)
        started = self._clock()
        value = await load()
        if self._invalidations.get(resource_id, 0) == before and self._hub.fanout_epoch() == epoch:
            # Aged from when the read began: the TTL bounds how old the data may be.
            self._entries[resource_id] = _Entry(owner_id, value, started, epoch)
        return value
