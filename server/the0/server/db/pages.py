"""One list page read: page size, the signed token bound to its query, one keyset query, the next token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.pagination import Cursor, PageTokens, page_size

RowT = TypeVar("RowT")


async def read_page(
    sessions: async_sessionmaker[AsyncSession],
    page_tokens: PageTokens,
    *,
    scope: str,
    requested_page_size: int,
    page_token: str,
    fetch: Callable[[AsyncSession, Cursor | None, int], Awaitable[Sequence[RowT]]],
    cursor: Callable[[RowT], Cursor],
) -> tuple[list[RowT], str]:
    """The rows of one page and the next page's token ("" on the last page).

    ``fetch(session, after, limit)`` runs the keyset query; it is asked for one row
    more than the page holds, which tells whether there is a next page.
    """
    limit = page_size(requested_page_size)
    after = page_tokens.decode(page_token, scope=scope)
    async with sessions() as session:
        rows = list(await fetch(session, after, limit + 1))
    return page_tokens.page(rows, limit, scope=scope, cursor=cursor)
