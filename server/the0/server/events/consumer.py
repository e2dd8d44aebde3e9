"""Durable JetStream pull consumers for inbound events, idempotent by event id.

Every event type has its own durable consumer (shared by all replicas, so each
event is worked on by one of them) with explicit acks. A handler
``async (session, envelope) -> None`` applies the event inside a transaction
that also records the event id in ``processed_events``: a redelivered event
finds its id and is acknowledged without effect.

Outcomes: applied or already applied → ack. Malformed, of an unknown id, or
nonsensical in the current state (the handler raises ``DropEvent``) → logged,
ack, dropped. Anything else (the database is down) → nak with a delay, so it
comes again; ``max_deliver`` bounds how often, so nothing loops forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server import metrics
from the0.server.background import BackgroundTasks
from the0.server.events.envelope import Envelope, MalformedEvent, subject_for
from the0.server.events.models import ProcessedEventRow
from the0.server.events.nats_connection import EVENTS_STREAM

log = logging.getLogger("the0.events.consumer")

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]


class DropEvent(Exception):
    """The event names an unknown resource or makes no sense now: log, ack, drop."""


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    DROPPED = "dropped"
    RETRY = "retry"


def durable_name(prefix: str, event_type: str) -> str:
    # Durable names may not contain '.', '*' or '>'.
    return f"{prefix}_{event_type}".replace(".", "_")


class EventConsumers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        nats_client: Callable[[], Nats | None],
        *,
        stream: str = EVENTS_STREAM,
        durable_prefix: str = "the0-api",
        batch_size: int = 50,
        fetch_timeout: float = 1.0,
        retry_delay: float = 2.0,
        max_deliver: int = 50,
    ) -> None:
        self._sessions = sessions
        self._nats_client = nats_client
        self._stream = stream
        self._durable_prefix = durable_prefix
        self._batch_size = batch_size
        self._fetch_timeout = fetch_timeout
        self._retry_delay = retry_delay
        self._max_deliver = max_deliver
        self._handlers: dict[str, Handler] = {}

    def register(self, event_type: str, handler: Handler) -> None:
        if event_type in self._handlers:
            raise ValueError(f"a handler for {event_type} is already registered")
        self._handlers[event_type] = handler

    def start(self, tasks: BackgroundTasks) -> None:
        """One consumer task per registered event type; cancelling one unsubscribes it."""
        for event_type, handler in self._handlers.items():
            tasks.spawn(f"consume-{event_type}", self._consume(event_type, handler))

    async def _consume(self, event_type: str, handler: Handler) -> None:
        durable = durable_name(self._durable_prefix, event_type)
        while True:
            nc = self._nats_client()
            if nc is None or not nc.is_connected:
                await asyncio.sleep(self._retry_delay / 2)
                continue
            try:
                subscription = await nc.jetstream().pull_subscribe(
                    subject_for(event_type),
                    durable=durable,
                    stream=self._stream,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT, max_deliver=self._max_deliver, ack_wait=30
                    ),
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - NATS down or the stream not there yet
                log.warning("cannot subscribe", extra={"consumer": durable, "error": repr(error)})
                await asyncio.sleep(self._retry_delay)
                continue
            try:
                await self._fetch_loop(subscription, event_type, handler)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
                raise
            except Exception as error:  # noqa: BLE001 - connection lost: subscribe again
                log.warning("consumer interrupted", extra={"consumer": durable, "error": repr(error)})
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
                await asyncio.sleep(self._retry_delay)

    async def _fetch_loop(
        self, subscription: JetStreamContext.PullSubscription, event_type: str, handler: Handler
    ) -> None:
        while True:
            try:
                messages = await subscription.fetch(self._batch_size, timeout=self._fetch_timeout)
            except TimeoutError:
                continue
            for message in messages:
                await self._deliver(message, event_type, handler)

    async def _deliver(self, message: Msg, event_type: str, handler: Handler) -> None:
        outcome = await self.handle(message.data, event_type, handler)
        metrics.EVENTS_CONSUMED.labels(event_type, outcome.value).inc()
        if outcome is Outcome.RETRY:
            await message.nak(delay=self._retry_delay)
        else:
            await message.ack()

    async def handle(self, raw: bytes, event_type: str, handler: Handler) -> Outcome:
        """Apply one event's bytes exactly once; say what to tell JetStream."""
        try:
            envelope = Envelope.from_json(raw)
        except MalformedEvent as error:
            log.warning("dropping a malformed event", extra={"type": event_type, "error": str(error)})
            return Outcome.DROPPED
        if envelope.type != event_type:
            log.warning("dropping an event whose type does not match its subject",
                        extra={"type": envelope.type, "subject_type": event_type, "event_id": envelope.id})
            return Outcome.DROPPED
        try:
            async with self._sessions() as session, session.begin():
                if await session.get(ProcessedEventRow, envelope.id) is not None:
                    return Outcome.DUPLICATE
                await handler(session, envelope)
                session.add(ProcessedEventRow(id=envelope.id, type=envelope.type))
        except DropEvent as reason:
            log.warning("dropping an event", extra={"type": envelope.type, "event_id": envelope.id,
                                                    "reason": str(reason)})
            return Outcome.DROPPED
        except IntegrityError:
            # Usually another replica recorded the same event id first; otherwise retry.
            async with self._sessions() as session:
                if await session.get(ProcessedEventRow, envelope.id) is not None:
                    return Outcome.DUPLICATE
            log.exception("event hit a constraint, will be redelivered", extra={"event_id": envelope.id})
            return Outcome.RETRY
        except asyncio.CancelledError:
            raise
        except Exception:  # transient (database down) or a bug (logged with its traceback): try again later
            log.exception("event failed, will be redelivered", extra={"type": envelope.type,
                                                                       "event_id": envelope.id})
            return Outcome.RETRY
        log.info("event applied", extra={"type": envelope.type, "event_id": envelope.id})
        return Outcome.APPLIED
