"""Bot rows. Every owner query starts from ``BotRepository._base`` (the owner's bots only)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, delete

from the0.server.bots.models import BotRequestRow, BotRow
from the0.server.db.repository import OwnedRepository
from the0.server.pagination import Cursor


class BotRepository(OwnedRepository[BotRow]):
    """The bots one owner may see; someone else's bots do not exist here."""

    row_type = BotRow

    async def list_page(self, *, state: str | None, after: Cursor | None, limit: int) -> Sequence[BotRow]:
        """Newest first, strictly after ``after`` (keyset, never OFFSET)."""
        query = self._base()
        if state is not None:
            query = query.where(BotRow.state == state)
        return await self._page(query, after, limit)

    # -- request ids ---------------------------------------------------------

    async def served_request(self, method: str, request_id: str) -> BotRequestRow | None:
        return await self._session.get(BotRequestRow, (self._owner_id, method, request_id))

    def remember_request(self, method: str, request_id: str, bot_id: str) -> None:
        self._session.add(
            BotRequestRow(owner_id=self._owner_id, method=method, request_id=request_id, bot_id=bot_id)
        )

    async def forget_requests(self) -> None:
        """Every request id of the owner (account deletion)."""
        await self._session.execute(delete(BotRequestRow).where(BotRequestRow.owner_id == self._owner_id))

    def every_bot(self) -> Select[BotRow]:
        """Every bot of the owner, oldest first (account deletion)."""
        return self._base().order_by(BotRow.create_time, BotRow.id)
