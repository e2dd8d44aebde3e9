"""Wires the bots domain for the composition root."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.background import BackgroundTasks
from the0.server.bots.events import BotEventHandlers
from the0.server.bots.executions import BotExecutions
from the0.server.bots.service import WATCH_KIND, BotService
from the0.server.bots.servicer import BotServicer
from the0.server.custom_bots.catalog import CustomBotCatalog, CustomBotTableCatalog
from the0.server.domain_page_tokens import page_tokens_for
from the0.server.events.backbone import EventBackbone
from the0.server.events.read_cache import ReadCache
from the0.server.secrets.box import config_secrets_for
from the0.server.settings import Settings


class Bots:
    """BotService and the inbound runtime events (registered on the backbone's consumers)."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        events: EventBackbone,
        *,
        catalog: CustomBotCatalog | None = None,
    ) -> None:
        self.service = BotService(
            sessions=sessions,
            outbox=events.outbox,
            watch_hub=events.watch_hub,
            catalog=catalog or CustomBotTableCatalog(),
            page_tokens=page_tokens_for(settings, "bots"),
            secrets=config_secrets_for(settings),
            max_bots_per_user=settings.max_bots_per_user,
        )
        self.executions = BotExecutions(
            sessions=sessions,
            page_tokens=page_tokens_for(settings, "bot executions"),
            retention=timedelta(days=settings.bot_execution_retention_days),
        )
        self.servicer = BotServicer(
            self.service,
            self.executions,
            reads=ReadCache(events.watch_hub, WATCH_KIND, ttl_seconds=settings.read_cache_seconds),
        )
        self.event_handlers = BotEventHandlers(
            events.watch_hub, max_executions_per_bot=settings.max_executions_per_bot
        )
        # bot.execution.started / completed / failed from the runtime; before the backbone starts.
        self.event_handlers.register(events.consumers)

    def start(self, tasks: BackgroundTasks) -> None:
        tasks.spawn("bot-executions-prune", self.executions.prune_forever())
