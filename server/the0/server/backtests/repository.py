"""Backtest rows. Every owner query starts from ``BacktestRepository._base`` (the owner's rows only)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from the0.server.backtests.models import BacktestRequestRow, BacktestRow
from the0.server.pagination import Cursor


class BacktestRepository:
    """The backtests one owner may see; someone else's backtests do not exist here."""

    def __init__(self, session: AsyncSession, owner_id: str) -> None:
        self._session = session
        self._owner_id = owner_id

    def _base(self) -> Select[tuple[BacktestRow]]:
        return select(BacktestRow).where(BacktestRow.owner_id == self._owner_id)

    async def get(self, backtest_id: str, *, for_update: bool = False) -> BacktestRow | None:
        query = self._base().where(BacktestRow.id == backtest_id)
        if for_update and self._session.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        return await self._session.scalar(query)

    def add(self, row: BacktestRow) -> None:
        assert row.owner_id == self._owner_id
        self._session.add(row)

    async def list_page(
        self, *, state: str | None, after: Cursor | None, limit: int
    ) -> Sequence[BacktestRow]:
        """Newest first, strictly after ``after`` (keyset, never OFFSET)."""
        query = self._base()
        if state is not None:
            query = query.where(BacktestRow.state == state)
        if after is not None:
            query = query.where(
                or_(
                    BacktestRow.create_time < after.create_time,
                    and_(BacktestRow.create_time == after.create_time, BacktestRow.id < after.id),
                )
            )
        query = query.order_by(BacktestRow.create_time.desc(), BacktestRow.id.desc()).limit(limit)
        return (await self._session.scalars(query)).all()

    # -- request ids ---------------------------------------------------------

    async def served_request(self, request_id: str) -> BacktestRequestRow | None:
        return await self._session.get(BacktestRequestRow, (self._owner_id, request_id))

    def remember_request(self, request_id: str, backtest_id: str) -> None:
        self._session.add(
            BacktestRequestRow(owner_id=self._owner_id, request_id=request_id, backtest_id=backtest_id)
        )


async def get_any_for_update(session: AsyncSession, backtest_id: str) -> BacktestRow | None:
    """Any owner's backtest, locked for a state change: for platform events only."""
    query = select(BacktestRow).where(BacktestRow.id == backtest_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query)
