"""The outbox relay: publishes committed outbox rows to JetStream and marks them sent.

Each row goes out with ``Nats-Msg-Id`` = event id, so a row published twice
(the relay died after publishing but before marking it sent, or two replicas
raced) is stored once by JetStream's duplicate window. Batches are published
with ``publish_async`` and their acks awaited together. The relay wakes right
after commits that added events and polls every ``poll_seconds`` as a safety
net; while NATS is down rows simply wait. On PostgreSQL several replicas share
the work with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client as Nats
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server import metrics
from the0.server.background import BackgroundTasks
from the0.server.events.envelope import Envelope, subject_for
from the0.server.events.models import OutboxRow
from the0.server.events.nats_connection import ensure_stream
from the0.server.events.outbox import Outbox

log = logging.getLogger("the0.events.relay")
MSG_ID_HEADER = "Nats-Msg-Id"


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        nats_client: Callable[[], Nats | None],
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        ack_timeout: float = 5.0,
        before_mark_sent: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._nats_client = nats_client
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._ack_timeout = ack_timeout
        # Tests inject a crash between "published" and "marked sent".
        self._before_mark_sent = before_mark_sent
        self._js: tuple[Nats, JetStreamContext] | None = None
        self.published_total = 0

    def start(self, tasks: BackgroundTasks) -> None:
        """Relay until stopped; unsent rows stay in the outbox for the next start."""
        tasks.spawn("outbox-relay", self.run())

    async def run(self) -> None:
        failures = 0
        while True:
            self._outbox.wake.clear()
            try:
                sent = await self.publish_pending()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS or the database is down: retry
                failures += 1
                log.warning("outbox relay failed, retrying", extra={"error": repr(error)})
                await asyncio.sleep(min(self._poll_seconds * failures, 5.0))
                continue
            if sent >= self._batch_size:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._outbox.wake.wait()

    def _jetstream(self) -> JetStreamContext | None:
        nc = self._nats_client()
        if nc is None or not nc.is_connected:
            return None
        if self._js is None or self._js[0] is not nc:
            self._js = (nc, nc.jetstream())
        return self._js[1]

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; return how many were published and marked sent."""
        js = self._jetstream()
        if js is None:
            return 0
        async with self._sessions() as session, session.begin():
            query = select(OutboxRow).where(OutboxRow.published_at.is_(None)).order_by(OutboxRow.seq)
            query = query.limit(self._batch_size)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.scalars(query)).all())
            if not rows:
                return 0
            futures = []
            for row in rows:
                payload = _payload(row)
                futures.append(
                    await js.publish_async(subject_for(row.type), payload, headers={MSG_ID_HEADER: row.id})
                )
            async with asyncio.timeout(self._ack_timeout):
                results = await asyncio.gather(*futures, return_exceptions=True)
            acked = [row for row, result in zip(rows, results, strict=True) if not isinstance(result, BaseException)]
            for row, result in zip(rows, results, strict=True):
                counter = metrics.EVENTS_PUBLISH_FAILED if isinstance(result, BaseException) else metrics.EVENTS_PUBLISHED
                counter.labels(row.type).inc()
            failed = len(rows) - len(acked)
            if failed:
                first = next(r for r in results if isinstance(r, BaseException))
                if any(isinstance(r, NoStreamResponseError) for r in results):
                    # The stream is gone (a NATS without our store): make it again, never drop events.
                    with contextlib.suppress(Exception):
                        await ensure_stream(js)
                log.warning("some events were not acknowledged", extra={"failed": failed, "error": repr(first)})
            if self._before_mark_sent is not None:
                self._before_mark_sent([row.id for row in acked])
            if acked:
                await session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.seq.in_([row.seq for row in acked]))
                    .values(published_at=datetime.now(UTC))
                )
        self.published_total += len(acked)
        return len(acked)

    async def depth(self) -> tuple[int, float]:
        """Unpublished events and the age in seconds of the oldest (metrics.OUTBOX_PENDING, OUTBOX_LAG)."""
        async with self._sessions() as session:
            count, oldest = (await session.execute(
                select(func.count(), func.min(OutboxRow.seq)).select_from(OutboxRow)
                .where(OutboxRow.published_at.is_(None))
            )).one()
            if not count:
                return 0, 0.0
            created = await session.scalar(select(OutboxRow.created_at).where(OutboxRow.seq == oldest))
        lag = (datetime.now(UTC) - created).total_seconds() if created is not None else 0.0
        return int(count), max(0.0, lag)

    async def pending_count(self) -> int:
        async with self._sessions() as session:
            return int(
                await session.scalar(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
                )
                or 0
            )


def _payload(row: OutboxRow) -> bytes:
    return Envelope(
        type=row.type,
        data=row.data,
        id=row.id,
        timestamp=row.created_at,
        correlation_id=row.correlation_id,
    ).to_json()
