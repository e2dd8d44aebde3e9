"""From JetStream to the table: the THE0_BOT_LOGS stream and its one durable consumer.

The stream (subjects ``the0.bot.logs.>``, its own age and size limits) is created
or updated at start-up and never deleted. Every replica pulls from the same
durable consumer, inserts a batch (up to BATCH_LINES messages or BATCH_SECONDS)
in one transaction and acknowledges only after the commit: a crash before the
ack means a redelivery, which the unique (bot, time, sequence) key turns into
nothing. After each commit a core-NATS note ``the0-logs.<botId>`` (outside the
stream) wakes the streams of every replica, which then read the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.bot_logs import repository
from the0.server.bot_logs.lines import LogLine, parse_message
from the0.server.nats_link import NatsLink

log = logging.getLogger("the0.bot_logs.ingest")

LOGS_STREAM = "THE0_BOT_LOGS"
LOGS_SUBJECT_PREFIX = "the0.bot.logs."
LOGS_SUBJECTS = ("the0.bot.logs.>",)
INGESTED_PREFIX = "the0-logs"
DURABLE = "the0-api-bot-logs"
BATCH_LINES = 500
BATCH_SECONDS = 0.05
RETRY_SECONDS = 1.0


async def ensure_logs_stream(js: JetStreamContext, *, max_age: timedelta, max_bytes: int) -> None:
    config = StreamConfig(
        name=LOGS_STREAM,
        subjects=list(LOGS_SUBJECTS),
        storage=StorageType.FILE,
        max_age=max_age.total_seconds(),
        max_bytes=max_bytes,
        # Full: the oldest lines go (they are in the table once ingested), publishing never blocks.
        discard=DiscardPolicy.OLD,
    )
    try:
        await js.stream_info(LOGS_STREAM)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream", extra={"stream": LOGS_STREAM})
        return
    await js.update_stream(config)


def bot_id_of(subject: str) -> str | None:
    if not subject.startswith(LOGS_SUBJECT_PREFIX):
        return None
    bot_id = subject[len(LOGS_SUBJECT_PREFIX):]
    return bot_id if 0 < len(bot_id) <= 36 and "." not in bot_id else None


def lines_of(messages: list[Msg]) -> list[LogLine]:
    lines: list[LogLine] = []
    for message in messages:
        bot_id = bot_id_of(message.subject)
        if bot_id is None:
            continue
        metadata = message.metadata
        received = metadata.timestamp or datetime.now(UTC)
        lines.extend(parse_message(bot_id, message.data, stream_seq=metadata.sequence.stream, received=received))
    return lines


class LogIngest:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        nats: NatsLink,
        *,
        max_age: timedelta,
        max_bytes: int,
        on_ingested: Callable[[set[str]], None],
    ) -> None:
        self._sessions = sessions
        self._nats = nats
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._on_ingested = on_ingested
        self.stream_ready = asyncio.Event()

    async def run(self) -> None:
        await self._nats.connected.wait()
        while True:
            client = self._nats.client
            subscription: JetStreamContext.PullSubscription | None = None
            try:
                if client is None or not client.is_connected:
                    raise ConnectionError("NATS not connected")
                js = client.jetstream()
                await ensure_logs_stream(js, max_age=self._max_age, max_bytes=self._max_bytes)
                self.stream_ready.set()
                subscription = await js.pull_subscribe(
                    "the0.bot.logs.>", durable=DURABLE, stream=LOGS_STREAM,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=20_000),
                )
                await self._fetch_loop(client, subscription)
            except asyncio.CancelledError:
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                raise
            except Exception as error:  # noqa: BLE001 - NATS or the database away: start again
                log.warning("log ingest interrupted", extra={"error": repr(error)})
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                await asyncio.sleep(RETRY_SECONDS)

    async def _fetch_loop(self, client: Nats, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                messages = await subscription.fetch(BATCH_LINES, timeout=1.0)
            except TimeoutError:
                continue
            # A short second fetch fills the batch when lines trickle in.
            if len(messages) < BATCH_LINES:
                with contextlib.suppress(TimeoutError):
                    messages += await subscription.fetch(BATCH_LINES - len(messages), timeout=BATCH_SECONDS)
            await self.store(client, messages)

    async def store(self, client: Nats, messages: list[Msg]) -> None:
        lines = lines_of(messages)
        try:
            async with self._sessions() as session, session.begin():
                known = await repository.existing_bots(session, {x.bot_id for x in lines})
                # Lines of unknown (deleted) bots are dropped: nobody can read them.
                await repository.insert_lines(session, [x for x in lines if x.bot_id in known])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("log batch not stored, will be redelivered", extra={"messages": len(messages)})
            for message in messages:
                with contextlib.suppress(Exception):
                    await message.nak(delay=RETRY_SECONDS)
            return
        for message in messages:
            await message.ack()
        bots = {x.bot_id for x in lines if x.bot_id in known}
        self._on_ingested(bots)
        for bot_id in bots:
            with contextlib.suppress(Exception):
                await client.publish(f"{INGESTED_PREFIX}.{bot_id}", b"")
