"""The server's NATS connection, established in the background.

NATS being down at start-up must not stop the server: requests still work
and events wait in the outbox. The link keeps trying until it connects; after
that nats-py reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as Nats

from the0.server.background import BackgroundTasks
from the0.server.events.nats_connection import connect_nats, ping_nats
from the0.server.redaction import redact_url, scrub

log = logging.getLogger("the0.nats")
RETRY_SECONDS = 2.0


class NatsLink:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Nats | None = None
        self.connected = asyncio.Event()

    def start(self, tasks: BackgroundTasks) -> None:
        tasks.spawn("nats-connect", self._connect_until_up())

    async def ping(self) -> None:
        if self.client is None:
            raise ConnectionError("not connected to NATS yet")
        await ping_nats(self.client)

    async def close(self) -> None:
        """After the background tasks have stopped: drain what is still buffered."""
        if self.client is not None and not self.client.is_closed:
            with contextlib.suppress(Exception):
                await self.client.drain()

    async def _connect_until_up(self) -> None:
        while True:
            try:
                self.client = await connect_nats(self.url)
            except Exception as error:  # noqa: BLE001 - any failure to connect: try again
                log.warning("NATS not reachable yet (NATS_URL): serving; events wait in the outbox",
                            extra={"url": redact_url(self.url), "error": scrub(repr(error), self.url)})
                await asyncio.sleep(RETRY_SECONDS)
            else:
                self.connected.set()
                return
