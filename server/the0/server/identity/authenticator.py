"""Turns presented credentials into a Principal, without a query per request.

JWTs: signature and claims, then the in-memory revoked-session set.
API keys: shape and checksum, then a short-lived cache of hash → (key, owner),
a database read on a miss, and the in-memory revoked-key set on every call.
``last_used_at`` is recorded in memory and written in batches (at most one
write per key per minute) by ``flush_last_used``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.background import BackgroundTasks
from the0.server.errors import Unauthenticated
from the0.server.identity import api_key_secrets
from the0.server.identity.api_key_secrets import ApiKeyHasher
from the0.server.identity.principal import Principal, role_of
from the0.server.identity.repository import CredentialRepository
from the0.server.identity.revocations import Revocations
from the0.server.identity.tokens import AccessTokens

log = logging.getLogger("the0.identity.auth")
LAST_USED_RESOLUTION = timedelta(minutes=1)
_MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class _CachedKey:
    api_key_id: str
    user_id: str
    role: str
    expires_at: datetime | None


class Authenticator:
    def __init__(
        self,
        *,
        tokens: AccessTokens,
        hasher: ApiKeyHasher,
        revocations: Revocations,
        sessions: async_sessionmaker[AsyncSession],
        api_key_cache_seconds: float,
        last_used_flush_seconds: float,
    ) -> None:
        self._tokens = tokens
        self._hasher = hasher
        self._revocations = revocations
        self._sessions = sessions
        self._flush_seconds = last_used_flush_seconds
        # hash -> key and owner, for api_key_cache_seconds; the revoked set is still checked per call.
        self._keys: TTLCache[str, _CachedKey] = TTLCache(maxsize=_MAX_CACHED_KEYS, ttl=api_key_cache_seconds)
        self._last_written: dict[str, datetime] = {}
        self._pending_uses: dict[str, datetime] = {}

    def authenticate_jwt(self, token: str) -> Principal:
        claims = self._tokens.verify(token)
        if self._revocations.session_revoked(claims.session_id):
            raise Unauthenticated("the session of this access token was logged out", reason="TOKEN_REVOKED")
        return Principal(user_id=claims.user_id, role=role_of(claims.role), auth_kind="jwt",
                         session_id=claims.session_id)

    async def authenticate_api_key(self, secret: str) -> Principal:
        if not api_key_secrets.is_well_formed(secret):
            raise _invalid_key()
        key_hash = self._hasher.hash(secret)
        cached = self._keys.get(key_hash)
        if cached is None:
            cached = await self._load(key_hash)
        now = datetime.now(UTC)
        if self._revocations.api_key_revoked(cached.api_key_id) or (
            cached.expires_at is not None and cached.expires_at <= now
        ):
            self._keys.pop(key_hash, None)
            raise _invalid_key()
        self._record_use(cached.api_key_id, now)
        return Principal(user_id=cached.user_id, role=role_of(cached.role), auth_kind="api_key",
                         api_key_id=cached.api_key_id)

    async def _load(self, key_hash: str) -> _CachedKey:
        async with self._sessions() as db:
            found = await CredentialRepository(db).find_api_key_by_hash(key_hash)
        if found is None:
            raise _invalid_key()
        key, user = found
        if key.revoked_at is not None or not user.active:
            raise _invalid_key()
        entry = _CachedKey(key.id, user.id, user.role, key.expires_at)
        self._keys[key_hash] = entry
        return entry

    def forget_api_key(self, api_key_id: str) -> None:
        for key_hash in [h for h, c in self._keys.items() if c.api_key_id == api_key_id]:
            self._keys.pop(key_hash, None)

    def _record_use(self, api_key_id: str, now: datetime) -> None:
        written = self._last_written.get(api_key_id)
        if written is None or now - written >= LAST_USED_RESOLUTION:
            self._pending_uses[api_key_id] = now
            self._last_written[api_key_id] = now

    async def flush_last_used(self) -> None:
        if not self._pending_uses:
            return
        uses, self._pending_uses = self._pending_uses, {}
        try:
            async with self._sessions() as db:
                await CredentialRepository(db).record_api_key_use(uses.items())
                await db.commit()
        except Exception as error:  # noqa: BLE001 - keep them for the next flush
            for key_id, used in uses.items():
                self._pending_uses.setdefault(key_id, used)
            log.warning("api key last-used flush failed", extra={"error": type(error).__name__})

    def start(self, tasks: BackgroundTasks) -> None:
        tasks.spawn("api-key-last-used", self._flush_forever())

    async def stop(self) -> None:
        """After the background tasks have stopped: write the last uses still pending."""
        await self.flush_last_used()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush_last_used()


def _invalid_key() -> Unauthenticated:
    # Never echo the key: not in the message, not in metadata.
    return Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
