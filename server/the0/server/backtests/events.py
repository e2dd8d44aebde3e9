"""Inbound runtime events about backtests (DESIGN.md §4), applied by durable consumers.

Each handler runs inside the consumer's transaction, which also records the
event id (a redelivery is a no-op). Unknown backtests, malformed data and
events that make no sense in the backtest's state raise ``DropEvent``: logged,
acked, dropped.

Each event type has its own consumer, so ``started`` and ``completed`` of one
run may arrive in either order:

- ``backtest.started`` {backtestId, startedAt?}: PENDING -> RUNNING with its
  start time. In any other state it is late (the run already finished, or the
  owner cancelled it) and dropped.
- ``backtest.completed`` {backtestId, completedAt?, summary?}: PENDING or
  RUNNING -> COMPLETED with the summary metrics (PENDING too: its ``started``
  may still be on the way, and is then dropped as late).
- ``backtest.failed`` {backtestId, error}: PENDING or RUNNING -> FAILED with the error.
- Anything for a COMPLETED, FAILED or CANCELLED backtest is dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from the0.server.backtests.models import BacktestRow
from the0.server.backtests.repository import get_any_for_update
from the0.server.backtests.service import TERMINAL, WATCH_KIND
from the0.server.bots.config_validation import normalise
from the0.server.events.consumer import DropEvent, EventConsumers
from the0.server.events.envelope import Envelope
from the0.server.events.watch_hub import WatchHub

log = logging.getLogger("the0.backtests.events")
MAX_SUMMARY_BYTES = 64 * 1024
MAX_ERROR_CHARS = 2000
EVENT_TYPES = ("backtest.started", "backtest.completed", "backtest.failed")


def _time(data: dict[str, Any], key: str, fallback: datetime) -> datetime:
    value = data.get(key)
    if value is None:
        return fallback.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as error:
        raise DropEvent(f"data.{key} is not an ISO 8601 time") from error
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class BacktestEventHandlers:
    def __init__(self, watch_hub: WatchHub) -> None:
        self._hub = watch_hub

    def register(self, consumers: EventConsumers) -> None:
        consumers.register("backtest.started", self.started)
        consumers.register("backtest.completed", self.completed)
        consumers.register("backtest.failed", self.failed)

    async def _active(self, session: AsyncSession, envelope: Envelope) -> BacktestRow:
        backtest_id = envelope.data.get("backtestId")
        if not isinstance(backtest_id, str) or not backtest_id or len(backtest_id) > 64:
            raise DropEvent("data.backtestId must be a non-empty string")
        row = await get_any_for_update(session, backtest_id)
        if row is None:
            raise DropEvent(f"unknown backtest {backtest_id}")
        if row.state in TERMINAL:
            raise DropEvent(f"backtest {backtest_id} is already {row.state}: late {envelope.type} ignored")
        return row

    def _changed(self, session: AsyncSession, row: BacktestRow) -> None:
        row.update_time = datetime.now(UTC)
        # The flush that follows gives the row a new etag; the hub only needs "look again".
        self._hub.notify_after_commit(session, WATCH_KIND, row.id, "changed")

    async def started(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._active(session, envelope)
        if row.state != "PENDING":
            raise DropEvent(f"backtest {row.id} is already {row.state}")
        row.start_time = _time(envelope.data, "startedAt", envelope.timestamp)
        row.state = "RUNNING"
        self._changed(session, row)

    async def completed(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._active(session, envelope)
        summary = envelope.data.get("summary")
        if summary is not None and not isinstance(summary, dict):
            raise DropEvent("data.summary must be an object")
        if summary is not None and len(orjson.dumps(summary)) > MAX_SUMMARY_BYTES:
            raise DropEvent("data.summary is larger than 64 KiB")
        row.end_time = _time(envelope.data, "completedAt", envelope.timestamp)
        if row.start_time is None and envelope.data.get("startedAt") is not None:
            row.start_time = _time(envelope.data, "startedAt", envelope.timestamp)
        row.summary = normalise(summary) if summary is not None else None
        row.state = "COMPLETED"
        row.error = None
        self._changed(session, row)

    async def failed(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._active(session, envelope)
        error = envelope.data.get("error")
        if not isinstance(error, str) or not error:
            raise DropEvent("data.error must be a non-empty string")
        row.error = error[:MAX_ERROR_CHARS]
        row.end_time = _time(envelope.data, "failedAt", envelope.timestamp)
        row.state = "FAILED"
        self._changed(session, row)
