"""The NATS connection: fail fast at start-up, then reconnect forever.

The URL may carry credentials: it is only ever logged or put in an error through ``redact_url``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from the0.server.redaction import redact_url, scrub

logger = logging.getLogger("the0.nats")

EVENTS_STREAM = "THE0_EVENTS"
# Every event family, not "the0.>": bot logs (the0.bot.logs.<botId>) live in a stream of
# their own (bot_logs/ingest.py, THE0_BOT_LOGS) and JetStream refuses overlapping streams.
EVENTS_SUBJECTS = ("the0.bot.*", "the0.bot.execution.>", "the0.custom-bot.>", "the0.backtest.>", "the0.user.>")


def stored_by_events_stream(subject: str) -> bool:
    """Whether THE0_EVENTS stores ``subject``: its subjects must leave the0.bot.logs.> to the
    log stream, so an event family missing from EVENTS_SUBJECTS would be published to nowhere."""
    tokens = subject.split(".")
    for pattern in EVENTS_SUBJECTS:
        parts = pattern.split(".")
        if parts[-1] == ">":
            if len(tokens) > len(parts) - 1 and all(p in ("*", t) for p, t in zip(parts[:-1], tokens, strict=False)):
                return True
        elif len(tokens) == len(parts) and all(p in ("*", t) for p, t in zip(parts, tokens, strict=True)):
            return True
    return False
EVENTS_MAX_AGE = timedelta(days=7)


class NatsUnavailable(ConnectionError):
    """NATS could not be reached, or did not answer in time."""


async def connect_nats(url: str, *, name: str = "the0-api", timeout: float = 5.0) -> Client:
    """Connect to ``url``, raising NatsUnavailable if the first connect fails within ``timeout``.

    nats-py retries the *first* connect forever when max_reconnect_attempts is
    -1, so the first connect is bounded here; once connected, the client
    reconnects forever and buffers publishes meanwhile.
    """
    nc = Client()
    shown = redact_url(url)

    async def on_error(exc: Exception) -> None:
        logger.warning("nats error: %s", scrub(str(exc), url) or type(exc).__name__)

    async def on_disconnected() -> None:
        logger.warning("nats disconnected from %s", shown)

    async def on_reconnected() -> None:
        logger.info("nats reconnected to %s", redact_url(nc.connected_url.geturl()) if nc.connected_url else shown)

    async def on_closed() -> None:
        logger.info("nats connection closed")

    try:
        async with asyncio.timeout(timeout):
            await nc.connect(
                servers=[url],
                name=name,
                connect_timeout=2,
                reconnect_time_wait=1,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        last = nc.last_error or exc
        await _close_quietly(nc)
        # nats-py's messages may repeat the server URL, credentials included.
        reason = scrub(str(last), url) if last else "timed out"
        raise NatsUnavailable(f"cannot connect to NATS at {shown}: {reason}") from exc
    logger.info("nats connected to %s", shown)
    return nc


async def _close_quietly(nc: Client) -> None:
    try:
        await nc.close()
    except Exception:  # best effort after a failed connect
        logger.debug("closing a failed nats client", exc_info=True)


async def ping_nats(nc: Client, timeout: float = 1.0) -> None:
    """A PING/PONG round trip; raise NatsUnavailable when disconnected or slow."""
    if not nc.is_connected:
        raise NatsUnavailable("nats is not connected")
    try:
        await nc.flush(timeout=timeout)  # type: ignore[arg-type]  # accepts float seconds
    except (TimeoutError, nats.errors.Error) as exc:
        raise NatsUnavailable(f"nats did not answer a ping: {exc or type(exc).__name__}") from exc


async def ensure_stream(
    js: JetStreamContext,
    name: str = EVENTS_STREAM,
    subjects: Sequence[str] = EVENTS_SUBJECTS,
) -> None:
    """Create the stream or update its config; never delete it (it holds undelivered events)."""
    config = StreamConfig(
        name=name,
        subjects=list(subjects),
        storage=StorageType.FILE,
        max_age=EVENTS_MAX_AGE.total_seconds(),
    )
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(config)
        logger.info("created stream %s on %s", name, list(subjects))
        return
    await js.update_stream(config)
