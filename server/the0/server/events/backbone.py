"""The event backbone one server replica runs: outbox + relay, durable consumers, watch hub.

``build`` creates it; domains add events with ``backbone.outbox.add``, register
inbound handlers with ``backbone.consumers.register`` (before ``start``) and
announce changes with ``backbone.watch_hub``. ``start`` returns at once: the
stream is created or updated as soon as NATS is reachable.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.background import BackgroundTasks
from the0.server.events.consumer import EventConsumers
from the0.server.events.nats_connection import ensure_stream
from the0.server.events.outbox import Outbox
from the0.server.events.relay import OutboxRelay
from the0.server.events.watch_hub import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_READ_BOUND_SECONDS, WatchHub
from the0.server.nats_link import NatsLink

log = logging.getLogger("the0.events")
_STREAM_RETRY_SECONDS = 2.0


class EventBackbone:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        nats: NatsLink,
        *,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        read_bound_seconds: float = DEFAULT_READ_BOUND_SECONDS,
        relay_poll_seconds: float = 1.0,
    ) -> None:
        self.nats = nats
        self.outbox = Outbox()
        self.relay = OutboxRelay(sessions, self.outbox, lambda: nats.client, poll_seconds=relay_poll_seconds)
        self.consumers = EventConsumers(sessions, lambda: nats.client)
        self.watch_hub = WatchHub(nats, heartbeat_seconds=heartbeat_seconds, read_bound_seconds=read_bound_seconds)
        self.stream_ready = asyncio.Event()

    def start(self, tasks: BackgroundTasks) -> None:
        """Stopping ``tasks`` stops consuming and relaying (unsent rows stay in the outbox)."""
        tasks.spawn("ensure-stream", self._ensure_stream())
        self.relay.start(tasks)
        self.consumers.start(tasks)
        self.watch_hub.start(tasks)

    async def stop(self) -> None:
        """After the background tasks have stopped: end the watch streams still open."""
        await self.watch_hub.stop()

    async def _ensure_stream(self) -> None:
        await self.nats.connected.wait()
        while True:
            client = self.nats.client
            try:
                assert client is not None
                await ensure_stream(client.jetstream())
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS went away again: retry
                log.warning("cannot create or update the event stream yet", extra={"error": repr(error)})
                await asyncio.sleep(_STREAM_RETRY_SECONDS)
            else:
                self.stream_ready.set()
                self.outbox.wake.set()
                return
