"""Turns presented credentials into a Principal, without a query per request.

JWTs: signature and claims, then the in-memory revoked-session and disabled-account sets.
API keys: shape and checksum, then a short-lived cache of hash → (key, owner),
a database read on a miss, and the in-memory revoked-key and disabled-account sets
on every call. A disabled account's JWT and API key get the same refusal (``account_disabled``):
TOKEN_REVOKED with ``accountDisabled``, never API_KEY_INVALID (clients drop a key refused so).
A well-formed key that is not ours (the checksum is public, so anyone can make
one) is remembered as unknown for a few seconds, and concurrent lookups of the
same key share one read: refusing a fake key costs a query once per
``api_key_miss_cache_seconds``, not once per request. A key created meanwhile
is dropped from that memory when it is hashed (``ApiKeyHasher.on_new_key``), and
a lookup that overlaps a creation does not store its miss.
``last_used_at`` is recorded in memory and written in batches (at most one
write per key per minute) by ``flush_last_used``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.background import BackgroundTasks
from the0.server.errors import Unauthenticated
from the0.server.identity import api_key_secrets, scopes
from the0.server.identity.api_key_secrets import ApiKeyHasher
from the0.server.identity.principal import Principal, role_of
from the0.server.identity.repository import CredentialRepository
from the0.server.identity.revocations import API_KEY, SESSION, Revocations
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
    scopes: tuple[str, ...]
    active: bool = True  # False: the account is disabled (the entry is then never cached)


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
        api_key_miss_cache_seconds: float = 10.0,
    ) -> None:
        self._tokens = tokens
        self._hasher = hasher
        self._revocations = revocations
        self._sessions = sessions
        self._flush_seconds = last_used_flush_seconds
        # hash -> key and owner, for api_key_cache_seconds; the revoked set is still checked per call.
        self._keys: TTLCache[str, _CachedKey] = TTLCache(maxsize=_MAX_CACHED_KEYS, ttl=api_key_cache_seconds)
        # hash -> True for keys the database did not know (bounded: a flood of distinct fakes
        # evicts the oldest, and each of those is a miss at most once per ttl anyway).
        self._unknown: TTLCache[str, bool] = TTLCache(maxsize=_MAX_CACHED_KEYS, ttl=api_key_miss_cache_seconds)
        self._loading: dict[str, asyncio.Task[_CachedKey | None]] = {}
        self._creations = 0  # bumped whenever a new key is hashed
        hasher.on_new_key(self._forget_unknown)
        self._last_written: dict[str, datetime] = {}
        self._pending_uses: dict[str, datetime] = {}

    def authenticate_jwt(self, token: str) -> Principal:
        claims = self._tokens.verify(token)
        if self._revocations.user_disabled(claims.user_id):
            raise account_disabled()
        if self._revocations.session_revoked(claims.session_id):
            raise Unauthenticated("the session of this access token was logged out", reason="TOKEN_REVOKED")
        return Principal(user_id=claims.user_id, role=role_of(claims.role), auth_kind="jwt",
                         session_id=claims.session_id, expires_at=claims.expires_at)

    @contextlib.contextmanager
    def revocation_signal(self, principal: Principal) -> Iterator[asyncio.Event]:
        """An event set when ``principal``'s session or API key is revoked, on any replica."""
        if principal.api_key_id is not None:
            kind, item_id = API_KEY, principal.api_key_id
        elif principal.session_id is not None:
            kind, item_id = SESSION, principal.session_id
        else:  # no revocable credential: an event that is never set
            yield asyncio.Event()
            return
        with self._revocations.signal(kind, item_id, user_id=principal.user_id) as event:
            yield event

    async def authenticate_api_key(self, secret: str) -> Principal:
        if not api_key_secrets.is_well_formed(secret):
            raise _invalid_key()
        hashes = self._hasher.candidates(secret)
        key_hash = hashes[0]
        cached = self._keys.get(key_hash)
        if cached is None:
            if key_hash in self._unknown:
                raise _invalid_key()
            cached = await self._load_once(hashes)
        now = datetime.now(UTC)
        if self._revocations.api_key_revoked(cached.api_key_id) or (
            cached.expires_at is not None and cached.expires_at <= now
        ):
            self._keys.pop(key_hash, None)
            raise _invalid_key()
        # Not API_KEY_INVALID: the key is fine, the account is not (clients keep the key).
        if not cached.active or self._revocations.user_disabled(cached.user_id):  # kept cached when
            raise account_disabled()  # known disabled here: it works again once enabled

        self._record_use(cached.api_key_id, now)
        return Principal(user_id=cached.user_id, role=role_of(cached.role), auth_kind="api_key",
                         api_key_id=cached.api_key_id, expires_at=cached.expires_at, api_key_scopes=cached.scopes)

    async def _load_once(self, hashes: list[str]) -> _CachedKey:
        """One database read per key at a time: concurrent callers of the same key share it.

        The read runs in a task of its own, so a caller that gives up does not cancel it for the others.
        """
        key_hash = hashes[0]
        loading = self._loading.get(key_hash)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._load(hashes))
            self._loading[key_hash] = loading
            creations = self._creations

            def settle(task: asyncio.Task[_CachedKey | None]) -> None:
                del self._loading[key_hash]
                if not task.cancelled() and task.exception() is None and task.result() is None \
                        and creations == self._creations:
                    self._unknown[key_hash] = True

            loading.add_done_callback(settle)
        entry = await asyncio.shield(loading)
        if entry is None:
            raise _invalid_key()
        return entry

    async def _load(self, hashes: list[str]) -> _CachedKey | None:
        """The key stored under one of ``hashes`` (one per hash key, current first), if usable."""
        async with self._sessions() as db:
            repository = CredentialRepository(db)
            for key_hash in hashes:
                found = await repository.find_api_key_by_hash(key_hash)
                if found is not None:
                    break
        if found is None:
            return None
        key, user = found
        if key.revoked_at is not None:
            return None
        entry = _CachedKey(key.id, user.id, user.role, key.expires_at, scopes.from_column(key.scopes), user.active)
        if user.active:
            # A disabled account's key is not cached: no replica would learn that it was enabled again.
            self._keys[hashes[0]] = entry
        return entry

    def _forget_unknown(self, key_hash: str) -> None:
        self._creations += 1
        self._unknown.pop(key_hash, None)

    def forget_api_key(self, api_key_id: str) -> None:
        for key_hash in [h for h, c in self._keys.items() if c.api_key_id == api_key_id]:
            self._keys.pop(key_hash, None)

    def forget_user(self, user_id: str) -> None:
        """Drop this replica's cached keys of an account whose role or state changed."""
        for key_hash in [h for h, c in self._keys.items() if c.user_id == user_id]:
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


def account_disabled() -> Unauthenticated:
    """A disabled account's JWT or API key: the reason a revoked session gets, and ``accountDisabled``
    so that a client tells it apart (and keeps a saved key: it works again once the account is enabled)."""
    return Unauthenticated("this account is disabled: contact an administrator", reason="TOKEN_REVOKED",
                           metadata={"accountDisabled": "true"})


def _invalid_key() -> Unauthenticated:
    # Never echo the key: not in the message, not in metadata.
    return Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
