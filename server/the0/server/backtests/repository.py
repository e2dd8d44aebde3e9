"""Backtest rows. Every owner query starts from ``BacktestRepository._base`` (the owner's rows only)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

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

    async def record_analysis_verdict(self, backtest_id: str, *, size: int, version: str, valid: bool) -> None:
        """Keep the verdict on the results object; a plain UPDATE, so the backtest's etag and
        update time stay (the resource did not change, and no watcher needs to look again)."""
        await self._session.execute(
            update(BacktestRow)
            .where(BacktestRow.owner_id == self._owner_id, BacktestRow.id == backtest_id)
            .values(analysis_size=size, analysis_version=version, analysis_valid=valid)
            .execution_options(synchronize_session=False)
        )

    # -- request ids ---------------------------------------------------------

    async def served_request(self, request_id: str) -> BacktestRequestRow | None:
        return await self._session.get(BacktestRequestRow, (self._owner_id, request_id))

    def remember_request(self, request_id: str, backtest_id: str) -> None:
        self._session.add(
            BacktestRequestRow(owner_id=self._owner_id, request_id=request_id, backtest_id=backtest_id)
        )
