"""The one owner-scoped repository base: every domain's rows are reached through it.

A subclass names its row type and columns; ``_base()`` is the owner's rows only,
so a query that starts there cannot reach another owner's data. Writes check the
owner with a real exception (an ``assert`` would vanish under ``python -O``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.db.models import Base
from the0.server.pagination import Cursor

RowT = TypeVar("RowT", bound=Base)


class OwnershipError(RuntimeError):
    """A repository was handed another owner's row: a bug in the caller, never a client's mistake."""


def lock_for_update(session: AsyncSession, query: Select[RowT]) -> Select[RowT]:
    """``FOR UPDATE`` where it means something; SQLite serialises writers anyway and has no such clause."""
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        return query.with_for_update()
    return query


def _column(row_type: type[Base], name: str) -> Any:
    # The base knows its rows' columns by name only: each row type declares its own.
    return getattr(row_type, name)


async def get_any_for_update(session: AsyncSession, row_type: type[RowT], row_id: str) -> RowT | None:
    """Any owner's row, locked for a state change: for platform events and admins only."""
    query = select(row_type).where(_column(row_type, "id") == row_id)
    return await session.scalar(lock_for_update(session, query))


class OwnedRepository(Generic[RowT]):
    """The rows of type ``row_type`` that one owner may see; someone else's rows do not exist here."""

    row_type: type[RowT]
    owner_column: str = "owner_id"
    # The newest-first keyset order of list pages: (created column, id).
    created_column: str = "create_time"

    def __init__(self, session: AsyncSession, owner_id: str) -> None:
        self._session = session
        self._owner_id = owner_id

    def _column(self, name: str) -> Any:
        return _column(self.row_type, name)

    def _base(self) -> Select[RowT]:
        return select(self.row_type).where(self._column(self.owner_column) == self._owner_id)

    def _check_owner(self, row: RowT) -> None:
        if getattr(row, self.owner_column) != self._owner_id:
            raise OwnershipError(f"{type(row).__name__} {getattr(row, 'id', '?')} is not this owner's")

    async def get(self, row_id: str, *, for_update: bool = False) -> RowT | None:
        query = self._base().where(self._column("id") == row_id)
        if for_update:
            query = lock_for_update(self._session, query)
        return await self._session.scalar(query)

    def add(self, row: RowT) -> None:
        self._check_owner(row)
        self._session.add(row)

    async def delete(self, row: RowT) -> None:
        self._check_owner(row)
        await self._session.delete(row)

    def _after(self, query: Select[RowT], after: Cursor | None) -> Select[RowT]:
        """Newest first, strictly after ``after`` (keyset, never OFFSET).

        A row-value comparison, so PostgreSQL seeks the (owner, created, id) index straight
        to the cursor instead of filtering every newer row: page 50 costs what page 1 does.
        """
        created, row_id = self._column(self.created_column), self._column("id")
        if after is not None:
            query = query.where(tuple_(created, row_id) < tuple_(after.create_time, after.id))
        return query.order_by(created.desc(), row_id.desc())

    async def _page(self, query: Select[RowT], after: Cursor | None, limit: int) -> Sequence[RowT]:
        return (await self._session.scalars(self._after(query, after).limit(limit))).all()
