"""Retention: what is past its window is deleted, so tables stay the size of their windows.

| table | deleted when | why it was kept until then |
|---|---|---|
| event_outbox | published longer ago than THE0_OUTBOX_RETENTION (1 day) | to look at what was sent |
| processed_events | processed longer ago than THE0_PROCESSED_EVENT_RETENTION (8 days) | a redelivery is a no-op: the stream keeps events 7 days |
| bot_requests, backtest_requests | older than THE0_REQUEST_ID_RETENTION (1 day) | a retry with the same request_id returns the first result |
| refresh_tokens | expired longer ago than THE0_SESSION_RETENTION (7 days) | reuse of a rotated token revokes its session family |
| sessions | revoked, or without a refresh token left, longer ago than THE0_SESSION_RETENTION | an access token of a revoked session is refused while it lives (1 day at most) |

One replica prunes at a time: on PostgreSQL the round runs only for whoever takes a
session-level advisory lock (``pg_try_advisory_lock``), the others skip it; SQLite has one
writer. Deletes go in batches of ``batch`` rows, each its own short transaction, so a
large backlog never holds locks for long (rows are found by ctid / rowid: one plan for
every table whatever its key). Only table and column names are known here, no domain
model: this module sits below the domains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from the0.server import metrics
from the0.server.db.models import UTCDateTime
from the0.server.settings import Settings

log = logging.getLogger("the0.retention")

# Any fixed 64-bit number, the same in every replica: "the0" + 2.
RETENTION_LOCK_KEY = 0x7468_6530_0000_0002
BATCH = 5000


@dataclass(frozen=True, slots=True)
class Rule:
    """Rows of ``table`` matching ``condition`` (with ``:cutoff``) are past their window."""

    name: str
    table: str
    condition: str
    window_seconds: float


def rules(settings: Settings) -> tuple[Rule, ...]:
    # Refresh tokens before sessions: a session is dead once its last token is gone.
    return (
        Rule("outbox", "event_outbox", "published_at IS NOT NULL AND published_at < :cutoff",
             settings.outbox_retention_seconds),
        Rule("processed_events", "processed_events", "processed_at < :cutoff",
             settings.processed_event_retention_seconds),
        Rule("bot_request_ids", "bot_requests", "create_time < :cutoff", settings.request_id_retention_seconds),
        Rule("backtest_request_ids", "backtest_requests", "create_time < :cutoff",
             settings.request_id_retention_seconds),
        Rule("refresh_tokens", "refresh_tokens", "expires_at < :cutoff", settings.session_retention_seconds),
        Rule("sessions", "sessions",
             "(revoked_at IS NOT NULL AND revoked_at < :cutoff) OR (created_at < :cutoff AND NOT EXISTS "
             "(SELECT 1 FROM refresh_tokens WHERE refresh_tokens.session_id = sessions.id))",
             settings.session_retention_seconds),
    )


class Retention:
    def __init__(
        self, engine: AsyncEngine, settings: Settings, *, batch: int = BATCH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._rules = rules(settings)
        self._every = settings.retention_interval_seconds
        self._batch = batch
        self._clock = clock

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.prune_once()
            except Exception as error:  # noqa: BLE001 - the database may be down: try at the next round
                log.warning("retention round failed", extra={"error": type(error).__name__})

    async def prune_once(self) -> dict[str, int] | None:
        """One round: rows deleted per rule, or None when another replica holds the round."""
        postgres = self._engine.dialect.name == "postgresql"
        async with self._engine.connect() as lock_holder:
            if postgres:
                taken = await lock_holder.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETENTION_LOCK_KEY})
                await lock_holder.commit()
                if not taken:
                    return None
            try:
                return {rule.name: await self._prune(rule, postgres=postgres) for rule in self._rules}
            finally:
                if postgres:
                    await lock_holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK_KEY})
                    await lock_holder.commit()

    async def _prune(self, rule: Rule, *, postgres: bool) -> int:
        cutoff = self._clock() - timedelta(seconds=rule.window_seconds)
        address = "ctid" if postgres else "rowid"
        # Names come from the table above, never from input.
        statement = text(
            f"DELETE FROM {rule.table} WHERE {address} IN "
            f"(SELECT {address} FROM {rule.table} WHERE {rule.condition} LIMIT :batch)"
        ).bindparams(bindparam("cutoff", type_=UTCDateTime()))  # stored as each dialect stores our times
        removed = 0
        while True:
            async with self._engine.begin() as conn:
                outcome = await conn.execute(statement, {"cutoff": cutoff, "batch": self._batch})
            count = int(outcome.rowcount or 0)
            removed += count
            if count < self._batch:
                break
        if removed:
            metrics.RETENTION_DELETED.labels(rule.name).inc(removed)
            log.info("retention pruned rows", extra={"rule": rule.name, "removed": removed})
        return removed
