"""Service keys → Principal: SHA-256, then a short per-replica cache of known keys."""

from __future__ import annotations

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.errors import Unauthenticated
from the0.server.identity.principal import Principal, ServiceRole
from the0.server.platform import keys
from the0.server.platform.repository import PlatformRepository

# Internal callers are few and steady: 60 s of cache spares a read per call.
CACHE_SECONDS = 60.0


def service_role(value: str) -> ServiceRole:
    if value == "runtime":
        return "runtime"
    if value == "analyzer":
        return "analyzer"
    raise ValueError(f"unknown service role {value!r}")


class ServiceKeys:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._known: TTLCache[str, Principal] = TTLCache(maxsize=1000, ttl=CACHE_SECONDS)

    async def authenticate_service_key(self, key: str) -> Principal:
        if not keys.MIN_KEY_LENGTH <= len(key) <= keys.MAX_KEY_LENGTH:
            raise _invalid()
        digest = keys.key_hash(key)
        principal = self._known.get(digest)
        if principal is None:
            async with self._sessions() as db:
                row = await PlatformRepository(db).account_by_hash(digest)
            if row is None:
                raise _invalid()
            principal = Principal(user_id=row.id, role="user", auth_kind="service_key",
                                  service_role=service_role(row.role))
            self._known[digest] = principal
        return principal

    def forget(self) -> None:
        """After a re-key at start-up (bootstrap)."""
        self._known.clear()


def _invalid() -> Unauthenticated:
    return Unauthenticated("the service key is not valid", reason="API_KEY_INVALID")
