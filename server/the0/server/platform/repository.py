"""Reads and writes of the platform domain.

Platform calls are not scoped to an owner: the runtime runs every user's bots. The bots
and custom-bot rows are read by id only here, read-only, for the two platform RPCs.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.bots.models import BotRow
from the0.server.custom_bots.models import CustomBotRow
from the0.server.platform.models import PlatformAuditRow, ServiceAccountRow


class PlatformRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def account_by_hash(self, key_hash: str) -> ServiceAccountRow | None:
        return (await self._session.execute(
            select(ServiceAccountRow).where(ServiceAccountRow.key_hash == key_hash)
        )).scalar_one_or_none()

    async def account_by_name(self, name: str) -> ServiceAccountRow | None:
        return (await self._session.execute(
            select(ServiceAccountRow).where(ServiceAccountRow.name == name)
        )).scalar_one_or_none()

    def add_account(self, row: ServiceAccountRow) -> None:
        self._session.add(row)

    async def bot(self, bot_id: str) -> BotRow | None:
        return await self._session.get(BotRow, bot_id)

    async def custom_bot(self, custom_bot_id: str) -> CustomBotRow | None:
        return await self._session.get(CustomBotRow, custom_bot_id)

    def audit(self, *, account_id: str, method: str, kind: str, resource_id: str, owner_id: str,
              secrets_revealed: bool) -> None:
        self._session.add(PlatformAuditRow(
            id=str(uuid.uuid4()), service_account_id=account_id, method=method, resource_kind=kind,
            resource_id=resource_id, owner_id=owner_id, secrets_revealed=secrets_revealed,
        ))
