"""Wires the bot logs for the composition root: ingest, wake-ups, retention, the RPCs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.background import BackgroundTasks
from the0.server.bot_logs.ingest import LogIngest
from the0.server.bot_logs.rpc import BotLogsRpc
from the0.server.bot_logs.service import BotLogsService, LogWakeups
from the0.server.domain_page_tokens import page_tokens_for
from the0.server.nats_link import NatsLink
from the0.server.settings import Settings


class BotLogs:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], nats: NatsLink) -> None:
        self.wakeups = LogWakeups(nats)
        self.service = BotLogsService(
            sessions,
            page_tokens_for(settings, "bot-logs"),
            self.wakeups,
            retention=timedelta(days=settings.bot_log_retention_days),
            max_lines_per_bot=settings.bot_log_lines_per_bot,
            heartbeat_seconds=settings.watch_heartbeat_seconds,
        )
        self.ingest = LogIngest(
            sessions, nats,
            max_age=timedelta(days=settings.bot_log_stream_max_age_days),
            max_bytes=settings.bot_log_stream_max_bytes,
            on_ingested=self.wakeups.wake,
        )
        self.rpc = BotLogsRpc(self.service)

    def start(self, tasks: BackgroundTasks) -> None:
        tasks.spawn("bot-logs-wakeups", self.wakeups.subscribe())
        tasks.spawn("bot-logs-ingest", self.ingest.run())
        tasks.spawn("bot-logs-retention", self.service.prune_forever())
