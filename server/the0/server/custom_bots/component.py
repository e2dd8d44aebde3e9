"""Wires the custom-bots domain for the composition root."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import AuditTrail
from the0.server.custom_bots.service import CustomBotService, SpoolBudget
from the0.server.custom_bots.servicer import CustomBotServicer
from the0.server.domain_page_tokens import page_tokens_for
from the0.server.events.backbone import EventBackbone
from the0.server.settings import Settings
from the0.server.storage.object_store import ObjectStore


class CustomBots:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        object_store: ObjectStore,
        events: EventBackbone,
    ) -> None:
        self.service = CustomBotService(
            sessions=sessions,
            object_store=object_store,
            outbox=events.outbox,
            watch_hub=events.watch_hub,
            page_tokens=page_tokens_for(settings, "custom bots"),
            max_upload_bytes=settings.max_upload_bytes,
            spool_dir=settings.data_dir / "uploads",
            upload_idle_seconds=settings.upload_idle_timeout_seconds,
            spool_budget=SpoolBudget(settings.max_upload_spool_bytes),
            max_versions_per_user=settings.max_custom_bot_versions_per_user,
            audit=AuditTrail(settings.trusted_proxies),
        )
        self.service.register_consumers(events.consumers)
        self.servicer = CustomBotServicer(self.service)

    async def start(self) -> None:
        await self.service.prepare()
