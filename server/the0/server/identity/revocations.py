"""Revoked sessions and API keys, known to every replica within a second.

The check on each request is a set lookup, never a query. The sets are fed by:
1. the database at start (sessions revoked within the last access-token
   lifetime — older ones' tokens have expired anyway — and recently revoked keys);
2. a core-NATS message from the replica that revoked (it updates its own set first);
3. a periodic re-read of the database, for anything missed while NATS was down.

The subject is deliberately outside ``the0.>``: that namespace is captured by the
THE0_EVENTS JetStream stream, and these notices are ephemeral, not events.

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
SESSION, API_KEY = "session", "api_key"


class Revocations:
    def __init__(self, *, nats: NatsLink, loader: Loader, remember: timedelta, sync_seconds: float) -> None:
        self._nats = nats
        self._loader = loader
        self._remember = remember
        self._sync_seconds = sync_seconds
        # id -> when we learnt of it (monotonic enough for pruning: wall clock, UTC).
        self._sessions: dict[str, datetime] = {}
        self._api_keys: dict[str, datetime] = {}
        self._known = {SESSION: self._sessions, API_KEY: self._api_keys}
        # (kind, id) -> the events of the open streams that use that session or key.
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._subscription: Subscription | None = None
        self.listening = asyncio.Event()

    def session_revoked(self, session_id: str) -> bool:
        return session_id in self._sessions

    def api_key_revoked(self, api_key_id: str) -> bool:
        return api_key_id in self._api_keys

    @contextlib.contextmanager
    def signal(self, kind: str, item_id: str) -> Iterator[asyncio.Event]:
        """An event set when the session or API key ``item_id`` is revoked (already set if it is)."""
        event = asyncio.Event()
        if item_id in self._known[kind]:
            event.set()
        key = (kind, item_id)
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]

    @property
    def waiter_count(self) -> int:
        return sum(len(events) for events in self._waiters.values())

    async def revoke_session(self, session_id: str) -> None:
        """After the revocation is committed: update this replica, then tell the others."""
        self._learn(SESSION, session_id, datetime.now(UTC), overwrite=True)
        await self._publish(SESSION, session_id)

    async def revoke_api_key(self, api_key_id: str) -> None:
        self._learn(API_KEY, api_key_id, datetime.now(UTC), overwrite=True)
        await self._publish(API_KEY, api_key_id)

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
        sessions, api_keys = await self._loader(now - self._remember)
        for session_id in sessions:
            self._learn(SESSION, session_id, now)
        for api_key_id in api_keys:
            self._learn(API_KEY, api_key_id, now)
        cutoff = now - self._remember - timedelta(minutes=1)
        for known in (self._sessions, self._api_keys):
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
        if kind in self._known:
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
