"""Inbound runtime events about bots (DESIGN.md §4), applied by durable consumers.

Each handler runs inside the consumer's transaction, which also records the
event id (a redelivery is a no-op). Unknown bots, malformed data and events
that make no sense in the bot's state raise ``DropEvent``: logged, acked, dropped.

The rules, given that each event type has its own consumer (so ``started`` and
``completed`` of one execution may arrive in either order):

- ``bot.execution.started`` {botId, executionId, startedAt}: DEPLOYING or
  RUNNING -> RUNNING, the execution recorded as running. In STOPPING the
  execution is recorded and the bot stays STOPPING. A ``started`` for an
  execution already recorded as finished is stale and dropped.
- ``bot.execution.completed`` {botId, executionId, completedAt, result?}: the
  execution is stored as last_execution (start, end, result). STOPPING ->
  STOPPED. A **scheduled** bot stays (or becomes) RUNNING between its runs; a
  realtime or event bot whose execution completed has ended -> STOPPED.
- ``bot.execution.failed`` {botId, executionId?, error}: DEPLOYING, RUNNING or
  STOPPING -> FAILED with the error.
- Anything for a DRAFT, STOPPED or FAILED bot is dropped: it was not asked to run.

Every applied event is also merged into the bot's execution history
(executions.py), one row per (bot, execution) in the same transaction. A stale
``started`` is dropped whole, so an execution whose ``completed`` came first
keeps the start its ``completed`` carried (``startedAt``), if any.

Which states each event is accepted from, and may leave the bot in, is the
table in lifecycle.py; this module decides between the targets it allows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.bots.executions import ExecutionReport, record
from the0.server.bots.lifecycle import BOT_LIFECYCLE
from the0.server.bots.models import BotRow
from the0.server.bots.service import WATCH_KIND
from the0.server.custom_bots.config_validation import normalise
from the0.server.db.repository import get_any_for_update
from the0.server.event_fields import event_time, optional_object, optional_string, required_string
from the0.server.events.consumer import DropEvent, EventConsumers
from the0.server.events.envelope import Envelope
from the0.server.events.watch_hub import WatchHub

log = logging.getLogger("the0.bots.events")
MAX_RESULT_BYTES = 64 * 1024
MAX_ERROR_CHARS = 2000
EVENT_TYPES = ("bot.execution.started", "bot.execution.completed", "bot.execution.failed")


def _time(data: dict[str, Any], key: str, fallback: datetime) -> str:
    # last_execution is JSON: its times are stored as ISO 8601 strings.
    return event_time(data, key, fallback).isoformat()


def _instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _bot_type(row: BotRow) -> str:
    return str(row.config.get("type", "")).partition("/")[0]


class BotEventHandlers:
    def __init__(self, watch_hub: WatchHub, *, max_executions_per_bot: int = 1000) -> None:
        self._hub = watch_hub
        self._max_executions = max_executions_per_bot

    def register(self, consumers: EventConsumers) -> None:
        consumers.register("bot.execution.started", self.execution_started)
        consumers.register("bot.execution.completed", self.execution_completed)
        consumers.register("bot.execution.failed", self.execution_failed)

    async def _bot(self, session: AsyncSession, envelope: Envelope, action: str) -> BotRow:
        bot_id = required_string(envelope.data, "botId")
        row = await get_any_for_update(session, BotRow, bot_id)
        if row is None:
            raise DropEvent(f"unknown bot {bot_id}")
        if not BOT_LIFECYCLE.allows(action, row.state):
            raise DropEvent(f"bot {bot_id} is {row.state}: it was not asked to run")
        return row

    def _changed(self, session: AsyncSession, row: BotRow) -> None:
        row.update_time = datetime.now(UTC)
        # The flush that follows gives the row a new etag; the hub only needs "look again".
        self._hub.notify_after_commit(session, WATCH_KIND, row.id, "changed")

    async def _record(self, session: AsyncSession, row: BotRow, execution: dict[str, Any]) -> None:
        """Merge what last_execution now says (this event's view) into the history row."""
        await record(
            session,
            bot_id=row.id,
            owner_id=row.owner_id,
            report=ExecutionReport(
                execution_id=str(execution["id"]),
                state=str(execution["state"]),
                start_time=_instant(execution.get("startTime")),
                end_time=_instant(execution.get("endTime")),
                result=execution.get("result"),
                error=execution.get("error"),
            ),
            max_per_bot=self._max_executions,
        )

    async def execution_started(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._bot(session, envelope, "execution.started")
        execution_id = required_string(envelope.data, "executionId")
        started = _time(envelope.data, "startedAt", envelope.timestamp)
        last = row.last_execution or {}
        if last.get("id") == execution_id and last.get("state") in ("COMPLETED", "FAILED"):
            raise DropEvent(f"execution {execution_id} already finished")
        row.last_execution = {"id": execution_id, "state": "RUNNING", "startTime": started}
        await self._record(session, row, row.last_execution)
        if row.state != "STOPPING":
            row.state = BOT_LIFECYCLE.target("execution.started", row.state, "RUNNING")
            row.error = None
        self._changed(session, row)

    async def execution_completed(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._bot(session, envelope, "execution.completed")
        execution_id = required_string(envelope.data, "executionId")
        completed = _time(envelope.data, "completedAt", envelope.timestamp)
        result = optional_object(envelope.data, "result", max_bytes=MAX_RESULT_BYTES)
        last = row.last_execution or {}
        execution: dict[str, Any] = {"id": execution_id, "state": "COMPLETED", "endTime": completed}
        if last.get("id") == execution_id and last.get("startTime"):
            execution["startTime"] = last["startTime"]
        elif isinstance(envelope.data.get("startedAt"), str):
            execution["startTime"] = _time(envelope.data, "startedAt", envelope.timestamp)
        if result is not None:
            execution["result"] = normalise(result)
        row.last_execution = execution
        await self._record(session, row, execution)
        if row.state == "STOPPING":
            target = "STOPPED"
        elif _bot_type(row) == "scheduled":
            target = "RUNNING"  # waits for its next scheduled run
        else:
            target = "STOPPED"  # a realtime or event bot whose execution ended is no longer running
        row.state = BOT_LIFECYCLE.target("execution.completed", row.state, target)
        self._changed(session, row)

    async def execution_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        row = await self._bot(session, envelope, "execution.failed")
        execution_id = optional_string(envelope.data, "executionId")
        error = envelope.data.get("error")
        if not isinstance(error, str) or not error:
            raise DropEvent("data.error must be a non-empty string")
        error = error[:MAX_ERROR_CHARS]
        last = row.last_execution or {}
        execution: dict[str, Any] = {
            "id": execution_id or last.get("id") or "",
            "state": "FAILED",
            "endTime": envelope.timestamp.astimezone(UTC).isoformat(),
            "error": error,
        }
        if last.get("startTime") and (execution_id is None or last.get("id") == execution_id):
            execution["startTime"] = last["startTime"]
        row.last_execution = execution
        # A failure the runtime reported without an execution id still gets its history row.
        await self._record(session, row, {**execution, "id": execution["id"] or envelope.id[:200]})
        row.state = BOT_LIFECYCLE.target("execution.failed", row.state, "FAILED")
        row.error = error
        self._changed(session, row)
