"""SQL for users, sessions, refresh tokens and API keys.

API keys are always reached through ``ApiKeyRepository(db, owner_id)``, whose
base statement is scoped to the owner; the one unscoped read is
``CredentialRepository.find_api_key_by_hash``, which is how the owner of a
presented key is found in the first place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Select, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.db.models import ApiKeyRow, LoginChallengeRow, RefreshTokenRow, SessionRow, UserRow
from the0.server.pagination import Cursor

USER_AGENT_MAX, ADDRESS_MAX = 256, 64


def new_id() -> str:
    return str(uuid.uuid4())


class UserRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def get(self, user_id: str) -> UserRow | None:
        return await self._db.get(UserRow, user_id)

    async def find_by_email(self, email: str) -> UserRow | None:
        """``email`` already normalised (stored lower-cased)."""
        return (await self._db.execute(select(UserRow).where(UserRow.email == email))).scalar_one_or_none()

    async def taken(self, *, email: str, username: str) -> tuple[bool, bool]:
        rows = (
            await self._db.execute(
                select(UserRow.email, UserRow.username).where(
                    or_(UserRow.email == email, UserRow.username == username)
                )
            )
        ).all()
        return any(r.email == email for r in rows), any(r.username == username for r in rows)

    def add(self, user: UserRow) -> None:
        self._db.add(user)

    async def get_for_update(self, user_id: str) -> UserRow | None:
        return (await self._db.execute(
            select(UserRow).where(UserRow.id == user_id).with_for_update()
        )).scalar_one_or_none()

    async def list_page(
        self, *, prefix: str, active: bool | None, role: str | None, after: Cursor | None, limit: int
    ) -> list[UserRow]:
        """Every account (an admin's view), newest first; ``prefix`` matches email or username."""
        statement = select(UserRow)
        if prefix:
            pattern = _escape_like(prefix.lower()) + "%"
            statement = statement.where(or_(UserRow.email.like(pattern, escape="\\"),
                                            func.lower(UserRow.username).like(pattern, escape="\\")))
        if active is not None:
            statement = statement.where(UserRow.active.is_(active))
        if role is not None:
            statement = statement.where(UserRow.role == role)
        if after is not None:
            statement = statement.where(
                or_(
                    UserRow.created_at < after.create_time,
                    and_(UserRow.created_at == after.create_time, UserRow.id < after.id),
                )
            )
        statement = statement.order_by(UserRow.created_at.desc(), UserRow.id.desc()).limit(limit)
        return list((await self._db.execute(statement)).scalars())

    async def disabled_since(self, since: datetime) -> list[str]:
        return list((await self._db.execute(
            select(UserRow.id).where(UserRow.disabled_at >= since, UserRow.active.is_(False))
        )).scalars())


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SessionRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def start(self, user_id: str, now: datetime, *, user_agent: str = "", client_address: str = "") -> SessionRow:
        session = SessionRow(id=new_id(), user_id=user_id, created_at=now, last_used_at=now,
                             user_agent=user_agent[:USER_AGENT_MAX], client_address=client_address[:ADDRESS_MAX])
        self._db.add(session)
        # No ORM relationships, so the unit of work does not order the inserts: the
        # session row must exist before its refresh token references it.
        await self._db.flush()
        return session

    def add_refresh_token(self, session_id: str, token_hash: str, now: datetime, expires: datetime) -> None:
        self._db.add(
            RefreshTokenRow(id=new_id(), session_id=session_id, token_hash=token_hash, created_at=now,
                            expires_at=expires)
        )

    async def find_refresh_token(self, token_hash: str) -> tuple[RefreshTokenRow, SessionRow] | None:
        row = (
            await self._db.execute(
                select(RefreshTokenRow, SessionRow)
                .join(SessionRow, SessionRow.id == RefreshTokenRow.session_id)
                .where(RefreshTokenRow.token_hash == token_hash)
            )
        ).one_or_none()
        return (row[0], row[1]) if row is not None else None

    async def mark_rotated(self, token_id: str, now: datetime) -> bool:
        """True if this call rotated it; False if another request already had (a reuse)."""
        result = await self._db.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.id == token_id, RefreshTokenRow.rotated_at.is_(None))
            .values(rotated_at=now)
            .returning(RefreshTokenRow.id)
        )
        return result.scalar_one_or_none() is not None

    async def revoke(self, session_id: str, now: datetime, reason: str) -> None:
        await self._db.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )

    async def revoked_since(self, since: datetime) -> list[str]:
        return list((await self._db.execute(select(SessionRow.id).where(SessionRow.revoked_at >= since))).scalars())

    async def open_page_of_user(
        self, user_id: str, *, alive_since: datetime, after: Cursor | None, limit: int
    ) -> list[SessionRow]:
        """``user_id``'s sessions not revoked and refreshed since ``alive_since``, newest first."""
        statement = select(SessionRow).where(
            SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None),
            or_(SessionRow.last_used_at >= alive_since,
                and_(SessionRow.last_used_at.is_(None), SessionRow.created_at >= alive_since)),
        )
        if after is not None:
            statement = statement.where(
                or_(
                    SessionRow.created_at < after.create_time,
                    and_(SessionRow.created_at == after.create_time, SessionRow.id < after.id),
                )
            )
        statement = statement.order_by(SessionRow.created_at.desc(), SessionRow.id.desc()).limit(limit)
        return list((await self._db.execute(statement)).scalars())

    async def get_of_user(self, user_id: str, session_id: str) -> SessionRow | None:
        """The session if it is ``user_id``'s; someone else's does not exist here."""
        return (await self._db.execute(
            select(SessionRow).where(SessionRow.id == session_id, SessionRow.user_id == user_id)
        )).scalar_one_or_none()

    async def revoke_all_of_user(self, user_id: str, now: datetime, reason: str,
                                 *, except_session: str | None = None) -> list[str]:
        """Ends every open session of ``user_id`` (but ``except_session``); returns their ids.

        Also voids the user's pending two-factor login challenges: whatever ends every session (a
        password change or reset, an admin's disable, forced reset or role change, logout everywhere)
        must not leave a half-finished login that a code could still turn into a new session."""
        await self._db.execute(delete(LoginChallengeRow).where(LoginChallengeRow.user_id == user_id))
        statement = (
            update(SessionRow)
            .where(SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(SessionRow.id)
        )
        if except_session is not None:
            statement = statement.where(SessionRow.id != except_session)
        return list((await self._db.execute(statement)).scalars())


class ApiKeyRepository:
    """The caller's API keys; nothing here can reach another user's."""

    def __init__(self, db: AsyncSession, owner_id: str) -> None:
        self._db = db
        self._owner_id = owner_id

    def _base(self) -> Select[ApiKeyRow]:
        return select(ApiKeyRow).where(ApiKeyRow.user_id == self._owner_id)

    async def name_taken(self, name: str) -> bool:
        found = await self._db.execute(self._base().where(ApiKeyRow.name == name).limit(1))
        return found.first() is not None

    def add(self, *, name: str, prefix: str, key_hash: str, now: datetime, expires: datetime | None,
            scopes: str) -> ApiKeyRow:
        row = ApiKeyRow(id=new_id(), user_id=self._owner_id, name=name, prefix=prefix, key_hash=key_hash,
                        created_at=now, expires_at=expires, scopes=scopes)
        self._db.add(row)
        return row

    async def get(self, api_key_id: str) -> ApiKeyRow | None:
        return (await self._db.execute(self._base().where(ApiKeyRow.id == api_key_id))).scalar_one_or_none()

    async def list_page(self, *, after: Cursor | None, limit: int) -> list[ApiKeyRow]:
        statement = self._base()
        if after is not None:
            statement = statement.where(
                or_(
                    ApiKeyRow.created_at < after.create_time,
                    and_(ApiKeyRow.created_at == after.create_time, ApiKeyRow.id < after.id),
                )
            )
        statement = statement.order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id.desc()).limit(limit)
        return list((await self._db.execute(statement)).scalars())


class CredentialRepository:
    """Reads that find the owner of a credential, and housekeeping across owners."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def find_api_key_by_hash(self, key_hash: str) -> tuple[ApiKeyRow, UserRow] | None:
        row = (
            await self._db.execute(
                select(ApiKeyRow, UserRow)
                .join(UserRow, UserRow.id == ApiKeyRow.user_id)
                .where(ApiKeyRow.key_hash == key_hash)
            )
        ).one_or_none()
        return (row[0], row[1]) if row is not None else None

    async def api_keys_revoked_since(self, since: datetime) -> list[str]:
        return list((await self._db.execute(select(ApiKeyRow.id).where(ApiKeyRow.revoked_at >= since))).scalars())

    async def record_api_key_use(self, uses: Iterable[tuple[str, datetime]]) -> None:
        """One batched UPDATE (executemany); never moves last_used_at backwards."""
        params = [{"key_id": key_id, "used": used} for key_id, used in uses]
        if not params:
            return
        # The Core table: an executemany UPDATE with its own WHERE (the ORM's bulk
        # update matches by primary key only).
        table = ApiKeyRow.metadata.tables[ApiKeyRow.__tablename__]
        statement = (
            update(table)
            .where(table.c.id == bindparam("key_id"))
            .where(or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("used")))
            .values(last_used_at=bindparam("used"))
        )
        await self._db.execute(statement, params)

