"""Owner-scoped reads that bots and backtests serve alike: one resource by id, and list pages.

A page is: the page size, the signed token bound to its query, one keyset query
for one row more than the page holds (which tells whether there is a next
page), and the next page's token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, Select, bindparam, select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from the0.server.db.repository import OwnedRepository
from the0.server.pagination import Cursor, PageTokens, page_size

ValueT = TypeVar("ValueT")


class OwnedReads(Generic[ValueT]):
    """Reads of the rows ``repository`` scopes (its row type, owner and created columns), owner's rows only.

    The hot read path: SQLAlchemy Core statements built once, with bound parameters, run on a pooled
    connection; no ORM session and no entity loading (in process, an ORM session read of one bot cost
    ~2.5x the Core read). ``to_value`` receives a Core row: the table's columns as attributes, named as
    on the ORM row, so the same ``from_row`` serves both.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        page_tokens: PageTokens,
        *,
        repository: type[OwnedRepository[Any]],
        to_value: Callable[[Any], ValueT],
        cursor: Callable[[Any], Cursor],
        list_scope: str,
    ) -> None:
        bind = sessions.kw["bind"]
        assert isinstance(bind, AsyncEngine), "OwnedReads needs sessions bound to one engine"
        self._engine = bind
        self._page_tokens = page_tokens
        self._to_value = to_value
        self._cursor = cursor
        self._list_scope = list_scope
        table = repository.row_type.__table__
        owner, created, row_id = (
            table.c[repository.owner_column],
            table.c[repository.created_column],
            table.c.id,
        )
        base = select(table).where(owner == bindparam("owner_id"))
        self._by_id = base.where(row_id == bindparam("row_id"))
        # One statement per shape of a page (with/without a state filter, first page or after a cursor).
        self._pages: dict[tuple[bool, bool], Select[Any]] = {}
        for with_state in (False, True):
            for with_cursor in (False, True):
                query = base.where(table.c.state == bindparam("state")) if with_state else base
                if with_cursor:
                    query = query.where(
                        tuple_(created, row_id)
                        < tuple_(
                            # Typed as the columns: their types turn a datetime into what is stored.
                            bindparam("after_time", type_=created.type),
                            bindparam("after_id", type_=row_id.type),
                        )
                    )
                self._pages[with_state, with_cursor] = query.order_by(created.desc(), row_id.desc()).limit(
                    bindparam("limit")
                )

    async def _rows(self, statement: Select[Any], parameters: dict[str, Any]) -> list[Row[Any]]:
        """Run one read; once more on a new connection if the pooled one turned out dead (db/engine.py)."""
        for attempt in (1, 2):
            try:
                async with self._engine.connect() as connection:
                    return list((await connection.execute(statement, parameters)).all())
            except DBAPIError as error:
                if attempt == 2 or not error.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    async def get(self, owner_id: str, row_id: str) -> ValueT | None:
        rows = await self._rows(self._by_id, {"owner_id": owner_id, "row_id": row_id})
        return self._to_value(rows[0]) if rows else None

    async def page(
        self, owner_id: str, *, state: str | None, requested_page_size: int, page_token: str
    ) -> tuple[list[ValueT], str]:
        """One page of the owner's resources (in ``state`` if given) and the next page's token ("" on the last)."""
        limit = page_size(requested_page_size)
        # The filter is part of the token's scope: a token of one filter is refused by another.
        scope = f"{self._list_scope}:{state or '*'}"
        after = self._page_tokens.decode(page_token, scope=scope)
        parameters: dict[str, Any] = {"owner_id": owner_id, "limit": limit + 1}
        if state is not None:
            parameters["state"] = state
        if after is not None:
            parameters |= {"after_time": after.create_time, "after_id": after.id}
        query = self._pages[state is not None, after is not None]
        rows = await self._rows(query, parameters)
        rows, next_token = self._page_tokens.page(rows, limit, scope=scope, cursor=self._cursor)
        return [self._to_value(row) for row in rows], next_token
