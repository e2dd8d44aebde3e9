"""Wires the backtests domain for the composition root."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.backtests.events import BacktestEventHandlers
from the0.server.backtests.service import BacktestService
from the0.server.backtests.servicer import BacktestServicer
from the0.server.custom_bots.catalog import CustomBotCatalog, CustomBotTableCatalog
from the0.server.domain_page_tokens import page_tokens_for
from the0.server.events.backbone import EventBackbone
from the0.server.settings import Settings
from the0.server.storage.object_store import ObjectStore


class Backtests:
    """BacktestService and the inbound runtime events (registered on the backbone's consumers)."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        object_store: ObjectStore,
        events: EventBackbone,
        *,
        catalog: CustomBotCatalog | None = None,
    ) -> None:
        self.service = BacktestService(
            sessions=sessions,
            outbox=events.outbox,
            watch_hub=events.watch_hub,
            catalog=catalog or CustomBotTableCatalog(),
            page_tokens=page_tokens_for(settings, "backtests"),
            object_store=object_store,
            max_active_backtests_per_user=settings.max_active_backtests_per_user,
        )
        self.servicer = BacktestServicer(self.service)
        self.event_handlers = BacktestEventHandlers(events.watch_hub)
        # backtest.started / completed / failed from the runtime; before the backbone starts.
        self.event_handlers.register(events.consumers)

    async def start(self) -> None:
        await self.service.prepare()
