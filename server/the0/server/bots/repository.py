"""Bot rows. Every owner query starts from ``BotRepository._base`` (the owner's bots only)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from the0.server.bots.models import BotRequestRow, BotRow
from the0.server.pagination import Cursor


class BotRepository:
    """The bots one owner may see; someone else's bots do not exist here."""

    def __init__(self, session: AsyncSession, owner_id: str) -> None:
        self._session = session
        self._owner_id = owner_id

    def _base(self) -> Select[tuple[BotRow]]:
        return select(BotRow).where(BotRow.owner_id == self._owner_id)

    async def get(self, bot_id: str, *, for_update: bool = False) -> BotRow | None:
        query = self._base().where(BotRow.id == bot_id)
        if for_update and self._session.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        return await self._session.scalar(query)

    def add(self, row: BotRow) -> None:
        assert row.owner_id == self._owner_id
        self._session.add(row)

    async def delete(self, row: BotRow) -> None:
        assert row.owner_id == self._owner_id
        await self._session.delete(row)

    async def list_page(self, *, state: str | None, after: Cursor | None, limit: int) -> Sequence[BotRow]:
        """Newest first, strictly after ``after`` (keyset, never OFFSET)."""
        query = self._base()
        if state is not None:
            query = query.where(BotRow.state == state)
        if after is not None:
            # A row-value comparison, so PostgreSQL seeks the (owner_id, create_time, id) index
            # straight to the cursor instead of filtering every newer row: page 50 costs page 1.
            query = query.where(tuple_(BotRow.create_time, BotRow.id) < tuple_(after.create_time, after.id))
        query = query.order_by(BotRow.create_time.desc(), BotRow.id.desc()).limit(limit)
        return (await self._session.scalars(query)).all()

    # -- request ids ---------------------------------------------------------

    async def served_request(self, method: str, request_id: str) -> BotRequestRow | None:
        return await self._session.get(BotRequestRow, (self._owner_id, method, request_id))

    def remember_request(self, method: str, request_id: str, bot_id: str) -> None:
        self._session.add(
            BotRequestRow(owner_id=self._owner_id, method=method, request_id=request_id, bot_id=bot_id)
        )


async def get_any_for_update(session: AsyncSession, bot_id: str) -> BotRow | None:
    """Any owner's bot, locked for a state change: for platform events only."""
    query = select(BotRow).where(BotRow.id == bot_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query)
