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

The states each event is accepted from are the table in lifecycle.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.backtests.lifecycle import BACKTEST_LIFECYCLE
from the0.server.backtests.models import BacktestRow
from the0.server.backtests.service import WATCH_KIND
from the0.server.custom_bots.config_validation import normalise
from the0.server.db.repository import get_any_for_update
from the0.server.event_fields import event_time, optional_object, required_string
from the0.server.events.consumer import DropEvent, EventConsumers
from the0.server.events.envelope import Envelope
from the0.server.events.watch_hub import WatchHub

log = logging.getLogger("the0.backtests.events")
MAX_SUMMARY_BYTES = 64 * 1024
MAX_ERROR_CHARS = 2000
EVENT_TYPES = ("backtest.started", "backtest.completed", "backtest.failed")


class BacktestEventHandlers:
    def __init__(self, watch_hub: WatchHub) -> None:
        self._hub = watch_hub

    def register(self, consumers: EventConsumers) -> None:
        consumers.register("backtest.started", self.started)
        consumers.register("backtest.completed", self.completed)
        consumers.register("backtest.failed", self.failed)

    async def _backtest(self, session: AsyncSession, envelope: Envelope, action: str) -> BacktestRow:
        backtest_id = required_string(envelope.data, "backtestId", max_chars=64)
        row = await get_any_for_update(session, BacktestRow, backtest_id)
        if row is None:
            raise DropEvent(f"unknown backtest {backtest_id}")
        if BACKTEST_LIFECYCLE.is_terminal(row.state):
            raise DropEvent(f"backtest {backtest_id} is already {row.state}: late {envelope.type} ignored")
        if not BACKTEST_LIFECYCLE.allows(action, row.state):
            raise DropEvent(f"backtest {row.id} is already {row.state}")
        return row

    def _changed(self, session: AsyncSession, row: BacktestRow) -> None:
        row.update_time = datetime.now(UTC)
        # The flush that follows gives the row a new etag; the hub only needs "look again".
        self._hub.notify_after_commit(session, WATCH_KIND, row.id, "changed")

    async def started(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._backtest(session, envelope, "started")
        row.start_time = event_time(envelope.data, "startedAt", envelope.timestamp)
        row.state = BACKTEST_LIFECYCLE.target("started", row.state, "RUNNING")
        self._changed(session, row)

    async def completed(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._backtest(session, envelope, "completed")
        summary = optional_object(envelope.data, "summary", max_bytes=MAX_SUMMARY_BYTES)
        row.end_time = event_time(envelope.data, "completedAt", envelope.timestamp)
        if row.start_time is None and envelope.data.get("startedAt") is not None:
            row.start_time = event_time(envelope.data, "startedAt", envelope.timestamp)
        row.summary = normalise(summary) if summary is not None else None
        row.state = BACKTEST_LIFECYCLE.target("completed", row.state, "COMPLETED")
        row.error = None
        self._changed(session, row)

    async def failed(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._backtest(session, envelope, "failed")
        error = envelope.data.get("error")
        if not isinstance(error, str) or not error:
            raise DropEvent("data.error must be a non-empty string")
        row.error = error[:MAX_ERROR_CHARS]
        row.end_time = event_time(envelope.data, "failedAt", envelope.timestamp)
        row.state = BACKTEST_LIFECYCLE.target("failed", row.state, "FAILED")
        self._changed(session, row)
