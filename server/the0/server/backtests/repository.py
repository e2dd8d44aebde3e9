"""Backtest rows. Every owner query starts from ``BacktestRepository._base`` (the owner's rows only)."""

from __future__ import annotations

from collections.abc import Sequence

from the0.server.backtests.models import BacktestRequestRow, BacktestRow
from the0.server.db.repository import OwnedRepository
from the0.server.pagination import Cursor


class BacktestRepository(OwnedRepository[BacktestRow]):
    """The backtests one owner may see; someone else's backtests do not exist here."""

    row_type = BacktestRow

    async def list_page(
        self, *, state: str | None, after: Cursor | None, limit: int
    ) -> Sequence[BacktestRow]:
        """Newest first, strictly after ``after`` (keyset, never OFFSET)."""
        query = self._base()
        if state is not None:
            query = query.where(BacktestRow.state == state)
        return await self._page(query, after, limit)

    # -- request ids ---------------------------------------------------------

    async def served_request(self, request_id: str) -> BacktestRequestRow | None:
        return await self._session.get(BacktestRequestRow, (self._owner_id, request_id))

    def remember_request(self, request_id: str, backtest_id: str) -> None:
        self._session.add(
            BacktestRequestRow(owner_id=self._owner_id, request_id=request_id, backtest_id=backtest_id)
        )
