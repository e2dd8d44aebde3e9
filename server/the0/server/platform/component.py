"""The platform domain's parts, built once by the composition root."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import AuditTrail
from the0.server.platform.authenticator import ServiceKeys
from the0.server.platform.service import PlatformService
from the0.server.platform.servicer import PlatformServicer
from the0.server.secrets.box import config_secrets_for
from the0.server.settings import Settings
from the0.server.storage.object_store import ObjectStore


class Platform:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], store: ObjectStore) -> None:
        self._settings = settings
        self.service_keys = ServiceKeys(sessions)
        self.service = PlatformService(sessions, store, self.service_keys, config_secrets_for(settings),
                                       AuditTrail(settings.trusted_proxies))
        self.servicer = PlatformServicer(self.service)

    async def start(self) -> None:
        """Before the server takes calls: the accounts of THE0_SERVICE_ACCOUNTS exist with their keys."""
        await self.service.bootstrap(self._settings.service_accounts)
