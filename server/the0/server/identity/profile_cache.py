"""Recently read user profiles, per replica, for a few seconds.

GetCurrentUser runs on every dashboard page load and every CLI command; a
database round trip for a profile that almost never changes made it cost
five times an authenticated no-op. Writes on this replica evict the entry;
another replica's change shows here within ``ttl`` seconds. Authorization
never reads this cache: credentials and revocations are checked per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ProfileCache(Generic[V]):
    def __init__(
        self, *, ttl_seconds: float = 5.0, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, value: V) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()  # bounded memory; refilling costs one read per user
        self._entries[key] = (self._clock() + self._ttl, value)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
