"""Login throttling: failed attempts per email and per client address, per minute.

In memory, per replica: with N replicas behind Envoy an attacker gets at most N
times the limit, which still stops online guessing; a shared counter (database
or NATS KV) would put a round trip on every login for little gain.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta

WINDOW_SECONDS = 60.0
_PRUNE_EVERY = 1024


class SlidingWindowCounter:
    def __init__(self, limit: int, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._adds = 0

    def retry_after(self, key: str) -> timedelta | None:
        """None if ``key`` may try again now, else how long until it may."""
        events = self._current(key)
        if events is None or len(events) < self.limit:
            return None
        return timedelta(seconds=max(1.0, events[0] + self.window - self._clock()))

    def add(self, key: str) -> None:
        self._events.setdefault(key, deque()).append(self._clock())
        self._adds += 1
        if self._adds % _PRUNE_EVERY == 0:
            for stale in [k for k in self._events if not self._current(k)]:
                self._events.pop(stale, None)

    def _current(self, key: str) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        cutoff = self._clock() - self.window
        while events and events[0] <= cutoff:
            events.popleft()
        return events


class LoginThrottle:
    def __init__(self, *, per_email: int, per_address: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._emails = SlidingWindowCounter(per_email, clock=clock)
        self._addresses = SlidingWindowCounter(per_address, clock=clock)

    def retry_after(self, email: str, address: str) -> timedelta | None:
        waits = [w for w in (self._emails.retry_after(email), self._addresses.retry_after(address)) if w]
        return max(waits) if waits else None

    def record_failure(self, email: str, address: str) -> None:
        self._emails.add(email)
        self._addresses.add(address)
