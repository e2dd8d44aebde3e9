"""Revoked sessions and API keys, known to every replica within a second.

The check on each request is a set lookup, never a query. The sets are fed by:
1. the database at start (sessions revoked within the last access-token
   lifetime — older ones' tokens have expired anyway — and recently revoked keys);
2. a core-NATS message from the replica that revoked (it updates its own set first);
3. a periodic re-read of the database, for anything missed while NATS was down.

The subject is deliberately outside ``the0.>``: that namespace is captured by the
THE0_EVENTS JetStream stream, and these notices are ephemeral, not events.

Disabled accounts (``USER``) travel the same three paths, so a disabled user's access
tokens and API keys stop on every replica within a second. Unlike a session, an account
can be enabled again: an ``USER_ENABLED`` notice removes it, and each database re-read
replaces what it knew of the recently disabled accounts (an account disabled longer ago
than ``remember`` is refused without this set: its sessions were ended when it was
disabled, and an API key's cache entry is reloaded, and refused, from the database).

Open streams wait on ``signal(kind, id)``: one asyncio.Event per watched session
or key, set by whichever of the three paths learns of the revocation first, so a
watch ends within a NATS round trip of a logout on any replica, and no stream polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from the0.server.background import BackgroundTasks
from the0.server.nats_link import NatsLink

log = logging.getLogger("the0.identity.revocations")

SUBJECT = "internal.the0.auth.revoked"

# Loads (session ids, api key ids) revoked since the given time from the database.
Loader = Callable[[datetime], Awaitable[tuple[list[str], list[str]]]]
# Loads the ids of the accounts disabled since the given time (and still disabled).
DisabledLoader = Callable[[datetime], Awaitable[list[str]]]
SESSION, API_KEY, USER = "session", "api_key", "user"
USER_ENABLED = "user_enabled"  # a notice only: removes a user from the disabled set


class Revocations:
    def __init__(
        self, *, nats: NatsLink, loader: Loader, remember: timedelta, sync_seconds: float,
        disabled_loader: DisabledLoader | None = None,
    ) -> None:
        self._nats = nats
        self._loader = loader
        self._disabled_loader = disabled_loader
        self._remember = remember
        self._sync_seconds = sync_seconds
        # id -> when we learnt of it (monotonic enough for pruning: wall clock, UTC).
        self._sessions: dict[str, datetime] = {}
        self._api_keys: dict[str, datetime] = {}
        self._users: dict[str, datetime] = {}  # disabled accounts
        self._known = {SESSION: self._sessions, API_KEY: self._api_keys, USER: self._users}
        # (kind, id) -> the events of the open streams that use that session or key.
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._subscription: Subscription | None = None
        self.listening = asyncio.Event()

    def session_revoked(self, session_id: str) -> bool:
        return session_id in self._sessions

    def api_key_revoked(self, api_key_id: str) -> bool:
        return api_key_id in self._api_keys

    def user_disabled(self, user_id: str) -> bool:
        return user_id in self._users

    @contextlib.contextmanager
    def signal(self, kind: str, item_id: str, user_id: str | None = None) -> Iterator[asyncio.Event]:
        """An event set when the session or API key ``item_id`` is revoked (already set if it is),
        or, with ``user_id``, when that account is disabled."""
        event = asyncio.Event()
        keys = [(kind, item_id)] + ([(USER, user_id)] if user_id is not None else [])
        for key_kind, key_id in keys:
            if key_id in self._known[key_kind]:
                event.set()
            self._waiters.setdefault((key_kind, key_id), set()).add(event)
        try:
            yield event
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]

    @property
    def waiter_count(self) -> int:
        # One open stream may wait under two keys (its credential and its account).
        return len(set().union(*self._waiters.values()))

    async def revoke_session(self, session_id: str) -> None:
        """After the revocation is committed: update this replica, then tell the others."""
        self._learn(SESSION, session_id, datetime.now(UTC), overwrite=True)
        await self._publish(SESSION, session_id)

    async def revoke_api_key(self, api_key_id: str) -> None:
        self._learn(API_KEY, api_key_id, datetime.now(UTC), overwrite=True)
        await self._publish(API_KEY, api_key_id)

    async def disable_user(self, user_id: str) -> None:
        """After the account's disabling is committed: this replica, then the others."""
        self._learn(USER, user_id, datetime.now(UTC), overwrite=True)
        await self._publish(USER, user_id)

    async def enable_user(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        await self._publish(USER_ENABLED, user_id)

    def _learn(self, kind: str, item_id: str, now: datetime, *, overwrite: bool = False) -> None:
        known = self._known[kind]
        if overwrite or item_id not in known:
            known[item_id] = now
        for event in self._waiters.get((kind, item_id), ()):
            event.set()

    async def start(self, tasks: BackgroundTasks, *, initial_load_timeout: float = 2.0) -> None:
        # Try to know the revocations before serving; a database that is down must
        # not stop start-up (the sync loop keeps trying).
        try:
            async with asyncio.timeout(initial_load_timeout):
                await self.sync_from_database()
        except Exception as error:  # noqa: BLE001
            log.warning("cannot load revocations yet", extra={"error": type(error).__name__})
        tasks.spawn("revocations-subscribe", self._subscribe_when_connected())
        tasks.spawn("revocations-sync", self._sync_forever())

    async def stop(self) -> None:
        """After the background tasks have stopped."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def sync_from_database(self) -> None:
        now = datetime.now(UTC)
        if self._disabled_loader is not None:
            disabled = set(await self._disabled_loader(now - self._remember))
            # Enabled since (by notice or in the database): what this replica learnt before
            # this read began and the database no longer names. Anything learnt during the
            # read is kept (its commit may postdate the read).
            for user_id in [u for u, seen in self._users.items() if u not in disabled and seen < now]:
                del self._users[user_id]
            for user_id in disabled:
                self._learn(USER, user_id, now)
        sessions, api_keys = await self._loader(now - self._remember)
        for session_id in sessions:
            self._learn(SESSION, session_id, now)
        for api_key_id in api_keys:
            self._learn(API_KEY, api_key_id, now)
        cutoff = now - self._remember - timedelta(minutes=1)
        for known in (self._sessions, self._api_keys, self._users):
            for stale in [k for k, seen in known.items() if seen < cutoff]:
                del known[stale]

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_seconds)
            try:
                await self.sync_from_database()
            except Exception as error:  # noqa: BLE001 - database down: try again next time
                log.warning("revocation sync failed", extra={"error": type(error).__name__})

    async def _subscribe_when_connected(self) -> None:
        await self._nats.connected.wait()
        assert self._nats.client is not None
        # nats-py re-sends the subscription after every reconnect.
        self._subscription = await self._nats.client.subscribe(SUBJECT, cb=self._on_message)
        await self._nats.client.flush()
        self.listening.set()

    async def _on_message(self, msg: Msg) -> None:
        try:
            notice = orjson.loads(msg.data)
            kind, item_id = notice["kind"], str(notice["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("malformed revocation notice dropped")
            return
        if kind == USER_ENABLED:
            self._users.pop(item_id, None)
        elif kind in self._known:
            self._learn(kind, item_id, datetime.now(UTC))

    async def _publish(self, kind: str, item_id: str) -> None:
        client = self._nats.client
        if client is None or not client.is_connected:
            log.warning("NATS down: other replicas learn of this revocation at their next sync",
                        extra={"kind": kind})
            return
        try:
            await client.publish(SUBJECT, orjson.dumps({"kind": kind, "id": item_id}))
        except Exception as error:  # noqa: BLE001 - the database sync is the safety net
            log.warning("revocation notice not published", extra={"kind": kind, "error": type(error).__name__})
