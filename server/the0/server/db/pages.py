"""Owner-scoped reads that bots and backtests serve alike: one resource by id, and list pages.

A page is: the page size, the signed token bound to its query, one keyset query
for one row more than the page holds (which tells whether there is a next
page), and the next page's token. Rows become domain values inside the session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.pagination import Cursor, PageTokens, page_size

RowT = TypeVar("RowT")
RowT_co = TypeVar("RowT_co", covariant=True)
ValueT = TypeVar("ValueT")


class StateListing(Protocol[RowT_co]):
    """What an owner-scoped repository of resources with a state offers these reads."""

    async def get(self, row_id: str, *, for_update: bool = False) -> RowT_co | None: ...

    async def list_page(self, *, state: str | None, after: Cursor | None, limit: int) -> Sequence[RowT_co]: ...


class OwnedReads(Generic[RowT, ValueT]):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        page_tokens: PageTokens,
        *,
        repository: Callable[[AsyncSession, str], StateListing[RowT]],
        to_value: Callable[[RowT], ValueT],
        cursor: Callable[[RowT], Cursor],
        list_scope: str,
    ) -> None:
        self._sessions = sessions
        self._page_tokens = page_tokens
        self._repository = repository
        self._to_value = to_value
        self._cursor = cursor
        self._list_scope = list_scope

    async def get(self, owner_id: str, row_id: str) -> ValueT | None:
        async with self._sessions() as session:
            row = await self._repository(session, owner_id).get(row_id)
            return None if row is None else self._to_value(row)

    async def page(
        self, owner_id: str, *, state: str | None, requested_page_size: int, page_token: str
    ) -> tuple[list[ValueT], str]:
        """One page of the owner's resources (in ``state`` if given) and the next page's token ("" on the last)."""
        limit = page_size(requested_page_size)
        # The filter is part of the token's scope: a token of one filter is refused by another.
        scope = f"{self._list_scope}:{state or '*'}"
        after = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as session:
            rows = list(
                await self._repository(session, owner_id).list_page(state=state, after=after, limit=limit + 1)
            )
        rows, next_token = self._page_tokens.page(rows, limit, scope=scope, cursor=self._cursor)
        return [self._to_value(row) for row in rows], next_token
