"""The custom-bots domain's one published interface: a runnable version, as bots and backtests see it.

Other domains import this module (and ``config_validation``) from custom_bots,
nothing else: the table, the repository and the service stay private, so a
change there is adapted here only. Reads go through ``CustomBotRepository``,
which scopes every query to the owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.custom_bots.lifecycle import APPROVED
from the0.server.custom_bots.models import CustomBotRow
from the0.server.custom_bots.repository import CustomBotRepository


@dataclass(frozen=True, slots=True)
class CustomBotVersion:
    """One version of one of the owner's custom bots, as bots and backtests see it."""

    id: str
    owner_id: str
    name: str
    version: str
    state: str  # PENDING_REVIEW | APPROVED | DECLINED | AWAITING_HUMAN_REVIEW
    type: str  # scheduled | realtime | event
    runtime: str
    entrypoints: dict[str, str] = field(default_factory=dict)
    bot_schema: dict[str, Any] | None = None
    backtest_schema: dict[str, Any] | None = None
    object_key: str = ""
    bucket: str = "custom-bots"

    @property
    def approved(self) -> bool:
        return self.state == APPROVED

    def runtime_data(self) -> dict[str, Any]:
        """What a runtime needs to fetch and start this version without calling back."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "runtime": self.runtime,
            "entrypoints": dict(self.entrypoints),
            "bucket": self.bucket,
            "objectKey": self.object_key,
        }


class CustomBotCatalog(Protocol):
    async def has_custom_bot(self, session: AsyncSession, owner_id: str, name: str) -> bool:
        """Whether the owner has any version of a custom bot called ``name``."""
        ...

    async def find_version(
        self, session: AsyncSession, owner_id: str, name: str, version: str
    ) -> CustomBotVersion | None:
        """The owner's version ``version`` of custom bot ``name``; None if there is none."""
        ...

    async def get(self, session: AsyncSession, owner_id: str, custom_bot_id: str) -> CustomBotVersion | None:
        """The owner's custom-bot version by id; None if there is none."""
        ...


CUSTOM_BOTS_BUCKET = "custom-bots"


class CustomBotTableCatalog:
    """Reads the custom-bots domain's table (owner-scoped through its repository)."""

    async def has_custom_bot(self, session: AsyncSession, owner_id: str, name: str) -> bool:
        return await CustomBotRepository(session, owner_id).latest_version_of(name) is not None

    async def find_version(
        self, session: AsyncSession, owner_id: str, name: str, version: str
    ) -> CustomBotVersion | None:
        row = await CustomBotRepository(session, owner_id).find_version(name, version)
        return None if row is None else version_from_row(row)

    async def get(self, session: AsyncSession, owner_id: str, custom_bot_id: str) -> CustomBotVersion | None:
        row = await CustomBotRepository(session, owner_id).get(custom_bot_id)
        return None if row is None else version_from_row(row)


def version_from_row(row: CustomBotRow) -> CustomBotVersion:
    manifest = row.manifest or {}
    return CustomBotVersion(
        id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        version=row.version,
        state=row.state,
        type=str(manifest.get("type", "")),
        runtime=str(manifest.get("runtime", "")),
        entrypoints={k: str(v) for k, v in (manifest.get("entrypoints") or {}).items() if v},
        bot_schema=row.bot_schema,
        backtest_schema=row.backtest_schema,
        object_key=row.object_key,
        bucket=CUSTOM_BOTS_BUCKET,
    )
