"""Per-caller limits kept in this replica's memory: a token bucket per caller and counted slots.

Nothing here touches the network or the database: the request rate is checked on every
RPC, and a shared counter would cost a round trip each time (docs/limits.md, "Request
rate"). Both tables are bounded LRU maps, so a flood of new callers (addresses) costs
memory up to a fixed size; a bucket pushed out is forgotten, which only ever lets its
caller in sooner, never later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

# Callers remembered per replica (each entry is a few hundred bytes).
MAX_TRACKED_CALLERS = 100_000


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """``rate`` tokens per second flow into a bucket of ``burst`` tokens; a call spends its cost."""

    rate: float
    burst: int

    @property
    def window_seconds(self) -> int:
        """How long an empty bucket takes to fill: the ``w`` of the RateLimit-Policy header."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Whole tokens left after this call (what the RateLimit header's ``r`` reports).
    remaining: int
    # Seconds until the refused call could pass (0 when allowed).
    retry_after: float
    # Seconds until the bucket is full again (the header's ``t`` when nothing is refused).
    reset_after: float


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """One token bucket per caller key, refilled lazily when the caller next calls."""

    def __init__(
        self, policy: RatePolicy, *, clock: Callable[[], float] = time.monotonic,
        max_callers: int = MAX_TRACKED_CALLERS,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._buckets: LRUCache[str, _Bucket] = LRUCache(maxsize=max_callers)

    def take(self, key: str, cost: int = 1) -> Decision:
        policy, now = self.policy, self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(policy.burst), now)
            self._buckets[key] = bucket
        else:
            bucket.tokens = min(float(policy.burst), bucket.tokens + (now - bucket.updated) * policy.rate)
            bucket.updated = now
        # A call costing more than the whole bucket could never pass: it needs a full bucket.
        needed = min(float(cost), float(policy.burst))
        if bucket.tokens >= needed:
            bucket.tokens -= needed
            return Decision(True, int(bucket.tokens), 0.0, (policy.burst - bucket.tokens) / policy.rate)
        wait = (needed - bucket.tokens) / policy.rate
        return Decision(False, int(bucket.tokens), wait, (policy.burst - bucket.tokens) / policy.rate)


class SlotsFull(Exception):
    """The caller already holds every slot it may."""


class Slots:
    """At most ``limit`` things (streams, uploads) held at once per caller key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Only callers holding a slot are kept: the map is as big as what is open now.
        self._held: dict[str, int] = {}

    def acquire(self, key: str) -> None:
        held = self._held.get(key, 0)
        if held >= self.limit:
            raise SlotsFull(key)
        self._held[key] = held + 1

    def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)
