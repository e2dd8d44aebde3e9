"""Custom-bot rows. Every owner query starts from ``CustomBotRepository._base`` (the owner's rows).

The one read across owners is ``ReviewQueue``: the admins' queue of versions awaiting
human review (its caller checks the admin role first).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.custom_bots.lifecycle import AWAITING_HUMAN_REVIEW
from the0.server.custom_bots.models import CustomBotRow
from the0.server.db.repository import OwnedRepository
from the0.server.pagination import Cursor


class CustomBotRepository(OwnedRepository[CustomBotRow]):
    """The versions one owner may see; someone else's rows do not exist here."""

    row_type = CustomBotRow
    created_column = "created_at"

    async def latest_version_of(self, name: str) -> CustomBotRow | None:
        return await self._session.scalar(
            self._base().where(CustomBotRow.name == name, CustomBotRow.is_latest.is_(True))
        )

    async def find_version(self, name: str, version: str) -> CustomBotRow | None:
        return await self._session.scalar(
            self._base().where(CustomBotRow.name == name, CustomBotRow.version == version)
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
        self._check_owner(row)
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
        return await self._page(query, after, limit)



class ReviewQueue:
    """Versions of every owner awaiting human review, oldest first (admins only)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def page(self, *, after: Cursor | None, limit: int) -> Sequence[CustomBotRow]:
        query = select(CustomBotRow).where(CustomBotRow.state == AWAITING_HUMAN_REVIEW)
        if after is not None:
            query = query.where(
                tuple_(CustomBotRow.created_at, CustomBotRow.id) > tuple_(after.create_time, after.id)
            )
        query = query.order_by(CustomBotRow.created_at.asc(), CustomBotRow.id.asc()).limit(limit)
        return (await self._session.scalars(query)).all()
