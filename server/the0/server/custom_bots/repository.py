"""Custom-bot rows. Every owner query starts from ``CustomBotRepository._base`` (the owner's rows)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.custom_bots.models import CustomBotRow
from the0.server.pagination import Cursor


class CustomBotRepository:
    """The versions one owner may see; someone else's rows do not exist here."""

    def __init__(self, session: AsyncSession, owner_id: str) -> None:
        self._session = session
        self._owner_id = owner_id

    def _base(self) -> Select[tuple[CustomBotRow]]:
        return select(CustomBotRow).where(CustomBotRow.owner_id == self._owner_id)

    async def get(self, custom_bot_id: str) -> CustomBotRow | None:
        return await self._session.scalar(self._base().where(CustomBotRow.id == custom_bot_id))

    async def latest_version_of(self, name: str) -> CustomBotRow | None:
        return await self._session.scalar(
            self._base().where(CustomBotRow.name == name, CustomBotRow.is_latest.is_(True))
        )

    async def has_version(self, name: str, version: str) -> bool:
        found = await self._session.scalar(
            self._base()
            .with_only_columns(CustomBotRow.id)
            .where(CustomBotRow.name == name, CustomBotRow.version == version)
        )
        return found is not None

    async def add_version(self, row: CustomBotRow, previous: CustomBotRow | None) -> None:
        """Insert ``row`` as the newest version of its name, demoting ``previous``."""
        assert row.owner_id == self._owner_id
        if previous is not None:
            previous.is_latest = False
            # Demote first: the partial unique index allows one newest version per name.
            await self._session.flush()
        row.is_latest = True
        self._session.add(row)
        await self._session.flush()

    async def list_page(self, *, name: str | None, after: Cursor | None, limit: int) -> Sequence[CustomBotRow]:
        """Newest first; the newest version of each name, or every version of ``name``."""
        query = self._base()
        if name:
            query = query.where(CustomBotRow.name == name)
        else:
            query = query.where(CustomBotRow.is_latest.is_(True))
        if after is not None:
            query = query.where(
                or_(
                    CustomBotRow.created_at < after.create_time,
                    and_(CustomBotRow.created_at == after.create_time, CustomBotRow.id < after.id),
                )
            )
        query = query.order_by(CustomBotRow.created_at.desc(), CustomBotRow.id.desc()).limit(limit)
        return (await self._session.scalars(query)).all()


async def get_any_for_update(session: AsyncSession, custom_bot_id: str) -> CustomBotRow | None:
    """Any owner's version, locked for a state change: for admins and platform events only."""
    query = select(CustomBotRow).where(CustomBotRow.id == custom_bot_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query)
