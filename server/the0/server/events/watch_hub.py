"""Fan-out of state changes to the watch streams of every replica.

After a change commits, ``changed(kind, id, etag)`` wakes the local watchers
of that resource and publishes ``the0-watch.<kind>.<id>`` on core NATS (not
JetStream: outside the stream's ``the0.>`` subjects, nothing is stored). Each
replica holds ONE wildcard subscription and wakes its own local watchers, kept
in a dict ``(kind, id) -> set of events``.

A message only says "look again": watchers re-read the resource from the
database, so they never see stale data, and duplicates (the local wake plus
the NATS echo) collapse. On every heartbeat a watcher re-reads too, so a change
missed while NATS was down still arrives within one heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server import metrics
from the0.server.background import BackgroundTasks
from the0.server.dependency_faults import dependency_fault
from the0.server.errors import Unavailable
from the0.server.events.after_commit import on_commit
from the0.server.nats_link import NatsLink

log = logging.getLogger("the0.events.watch")
WATCH_PREFIX = "the0-watch"
DEFAULT_HEARTBEAT_SECONDS = 25.0
# One read of a watched resource; the App passes THE0_REQUEST_TIMEOUT.
DEFAULT_READ_BOUND_SECONDS = 10.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """What a watcher's loader returns: the resource, its etag, whether it is final."""

    value: T
    etag: str
    terminal: bool


class Heartbeat:
    """Yielded by ``WatchHub.watch`` when nothing changed for a heartbeat interval."""


HEARTBEAT = Heartbeat()


class WatchHub:
    def __init__(
        self,
        nats: NatsLink | None,
        *,
        prefix: str = WATCH_PREFIX,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        read_bound_seconds: float = DEFAULT_READ_BOUND_SECONDS,
    ) -> None:
        self.read_bound_seconds = read_bound_seconds
        self._nats = nats
        self._prefix = prefix
        self.heartbeat_seconds = heartbeat_seconds
        self._watchers: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._subscription: Subscription | None = None
        self._publishes: set[asyncio.Task[None]] = set()
        self._listeners: dict[str, list[Callable[[str], None]]] = {}
        self.subscribed = asyncio.Event()

    def subject(self, kind: str, resource_id: str) -> str:
        return f"{self._prefix}.{kind}.{resource_id}"

    def on_change(self, kind: str, listener: Callable[[str], None]) -> None:
        """Call ``listener(resource_id)`` on every change of a ``kind`` resource, local or remote."""
        self._listeners.setdefault(kind, []).append(listener)

    def fanout_epoch(self) -> int | None:
        """None while changes of other replicas may not arrive; else a number that changes on each reconnect.

        What was learnt before a reconnect may be stale after it: messages published meanwhile are lost.
        """
        client = self._nats.client if self._nats is not None else None
        if client is None or not client.is_connected or not self.subscribed.is_set():
            return None
        return int(client.stats["reconnects"])

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._watchers.values())

    # -- lifecycle -----------------------------------------------------------

    def start(self, tasks: BackgroundTasks) -> None:
        tasks.spawn("watch-hub", self._subscribe())

    async def stop(self) -> None:
        """After the background tasks have stopped: unsubscribe and let every watcher go."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        for task in list(self._publishes):
            task.cancel()
        # Wake every watcher so its stream can end promptly on shutdown.
        for events in self._watchers.values():
            for event in events:
                event.set()

    async def _subscribe(self) -> None:
        if self._nats is None:
            return
        await self._nats.connected.wait()
        assert self._nats.client is not None
        # nats-py restores subscriptions after a reconnect by itself.
        self._subscription = await self._nats.client.subscribe(f"{self._prefix}.>", cb=self._on_message)
        # Subscribed means the server has the SUB: until its PONG, another replica's change could pass by
        # unseen (and a read cache would keep the old value for its whole TTL).
        with contextlib.suppress(Exception):  # NATS went away meanwhile: nats-py sends the SUB again
            await self._nats.client.flush(timeout=5)
        self.subscribed.set()

    async def _on_message(self, message: Msg) -> None:
        parts = message.subject[len(self._prefix) + 1 :].split(".", 1)
        if len(parts) == 2:
            self._wake(parts[0], parts[1])

    # -- changes -------------------------------------------------------------

    def notify_after_commit(self, session: AsyncSession, kind: str, resource_id: str, etag: str) -> None:
        """Announce the change once the session's transaction has committed."""
        on_commit(session, lambda: self.changed(kind, resource_id, etag))

    def changed(self, kind: str, resource_id: str, etag: str) -> None:
        """A committed change: wake local watchers now, and every other replica through NATS."""
        self._wake(kind, resource_id)
        client = self._nats.client if self._nats is not None else None
        if client is None or not client.is_connected:
            return  # other replicas catch up on their next heartbeat re-read
        task = asyncio.get_running_loop().create_task(
            self._publish(client, self.subject(kind, resource_id), orjson.dumps({"etag": etag}))
        )
        self._publishes.add(task)
        task.add_done_callback(self._publishes.discard)

    @staticmethod
    async def _publish(client: NatsClient, subject: str, payload: bytes) -> None:
        try:
            await client.publish(subject, payload)
        except Exception as error:  # noqa: BLE001 - best effort; heartbeats re-read anyway
            log.warning("watch notification not sent", extra={"subject": subject, "error": repr(error)})

    def _wake(self, kind: str, resource_id: str) -> None:
        for listener in self._listeners.get(kind, ()):
            listener(resource_id)
        for event in self._watchers.get((kind, resource_id), ()):
            event.set()

    # -- watching ------------------------------------------------------------

    async def _bounded(self, load: Callable[[], Awaitable[Snapshot[T]]]) -> Snapshot[T]:
        """One read, bounded: a frozen database must not stall a stream past its heartbeats."""
        async with asyncio.timeout(self.read_bound_seconds):
            return await load()

    async def watch(
        self, kind: str, resource_id: str, load: Callable[[], Awaitable[Snapshot[T]]]
    ) -> AsyncGenerator[T | Heartbeat, None]:
        """The current value, then each change, ``HEARTBEAT`` when idle; stops after a terminal value.

        ``load`` raises (e.g. NotFound) if the resource is not the caller's.
        """
        key = (kind, resource_id)
        signal = asyncio.Event()
        # Registered before the first read, so a change between the two is not missed.
        self._watchers.setdefault(key, set()).add(signal)
        metrics.WATCHERS.inc()
        try:
            try:
                snapshot = await self._bounded(load)
            except TimeoutError:
                raise Unavailable(
                    "the database did not answer in time; retry the watch shortly",
                    metadata={"dependency": "database"},
                    retry_after=timedelta(seconds=1),
                ) from None
            yield snapshot.value
            if snapshot.terminal:
                return
            etag = snapshot.etag
            last_sent = time.monotonic()
            while True:
                remaining = last_sent + self.heartbeat_seconds - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(remaining, 0)):
                        await signal.wait()
                signal.clear()
                try:
                    snapshot = await self._bounded(load)
                except Exception as error:
                    if not isinstance(error, TimeoutError) and dependency_fault(error) is None:
                        raise
                    # The database is away: keep the stream (heartbeats say it is alive) and
                    # read again at the next wake-up or heartbeat; nothing is lost meanwhile.
                    log.warning("watch re-read failed", extra={"kind": kind, "error_type": type(error).__name__})
                    if time.monotonic() - last_sent >= self.heartbeat_seconds:
                        last_sent = time.monotonic()
                        yield HEARTBEAT
                    continue
                if snapshot.etag != etag:
                    etag = snapshot.etag
                    last_sent = time.monotonic()
                    yield snapshot.value
                    if snapshot.terminal:
                        return
                elif time.monotonic() - last_sent >= self.heartbeat_seconds:
                    last_sent = time.monotonic()
                    yield HEARTBEAT
        finally:
            metrics.WATCHERS.dec()
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(signal)
                if not watchers:
                    del self._watchers[key]
