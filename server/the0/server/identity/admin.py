"""Admin rules: find accounts, disable and enable them, require a new password, turn two-factor
login off for an owner who lost every factor, change roles.

The auth interceptor lets only an admin's session reach these methods
(AUTH_POLICY_ADMIN); each method checks the role again, so a wiring mistake fails
closed. Every change is committed first and then fanned out to every replica through
``Revocations`` (a disabled account's tokens and keys stop within a second; ended
sessions likewise). An admin cannot act on their own account: the last admin could
otherwise lock every admin out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.repository import AuditFilter
from the0.server.audit.service import AuditLog, AuditPage, type_filter
from the0.server.audit.trail import Actor, AuditTrail
from the0.server.db.models import UserRow
from the0.server.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, PermissionDenied
from the0.server.identity.domain import User, UserPage
from the0.server.identity.principal import Principal, Role
from the0.server.identity.repository import SessionRepository, UserRepository
from the0.server.identity.revocations import Revocations
from the0.server.identity.two_factor import not_enabled
from the0.server.identity.two_factor_repository import TwoFactorRepository
from the0.server.pagination import Cursor, PageTokens, page_size

log = logging.getLogger("the0.identity.admin")
QUERY_MAX = 254


def _now() -> datetime:
    return datetime.now(UTC)


class AdminService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        revocations: Revocations,
        page_tokens: PageTokens,
        forget_user: Callable[[str], None],
        audit: AuditTrail,
        audit_log: AuditLog,
    ) -> None:
        self._audit = audit
        self._audit_log = audit_log
        self._sessions = sessions
        self._revocations = revocations
        self._page_tokens = page_tokens
        # Drops this replica's cached profile and API keys of a changed account.
        self._forget_user = forget_user

    async def list_users(
        self, admin: Principal, *, requested_page_size: int, page_token: str, query: str,
        active: bool | None, role: Role | None,
    ) -> UserPage:
        _require_admin(admin)
        limit = page_size(requested_page_size)
        query = query.strip()
        if len(query) > QUERY_MAX:
            raise InvalidArgument("query is too long",
                                  violations=[FieldViolation("query", f"must be at most {QUERY_MAX} characters")])
        scope = f"ListUsers:{query.lower()}:{active}:{role}"
        after = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as db:
            rows = await UserRepository(db).list_page(prefix=query, active=active, role=role, after=after,
                                                      limit=limit + 1)
        rows, next_token = self._page_tokens.page(
            rows, limit, scope=scope, cursor=lambda row: Cursor(row.created_at, row.id)
        )
        return UserPage([User.from_row(r) for r in rows], next_token)

    async def get_user(self, admin: Principal, user_id: str) -> User:
        _require_admin(admin)
        _require_id(user_id)
        async with self._sessions() as db:
            row = await UserRepository(db).get(user_id)
        if row is None:
            raise _not_found(user_id)
        return User.from_row(row)

    async def disable_user(self, admin: Principal, user_id: str) -> User:
        _require_admin(admin)
        _require_other(admin, user_id)
        now = _now()
        async with self._sessions() as db:
            row = await self._locked(db, user_id)
            ended: list[str] = []
            if row.active:
                row.active = False
                row.disabled_at = now
                row.updated_at = now
                ended = await SessionRepository(db).revoke_all_of_user(user_id, now, "USER_DISABLED")
                self._audit.record(db, "admin.user-disabled", actor=Actor.of(admin), subject_user_id=user_id,
                                   details={"sessionsRevoked": len(ended)}, now=now)
            user = User.from_row(row)
            await db.commit()
        await self._announce(user_id, ended, disabled=not user.active)
        log.info("user disabled", extra={"userId": user_id, "adminId": admin.user_id})
        return user

    async def enable_user(self, admin: Principal, user_id: str) -> User:
        _require_admin(admin)
        _require_id(user_id)
        now = _now()
        async with self._sessions() as db:
            row = await self._locked(db, user_id)
            if row.deleted_at is not None:  # anonymised for good: there is no one to give it back to
                raise NotFound("the account was deleted by its owner", metadata={"id": user_id})
            changed = not row.active
            if changed:
                row.active = True
                row.disabled_at = None
                row.updated_at = now
                self._audit.record(db, "admin.user-enabled", actor=Actor.of(admin), subject_user_id=user_id, now=now)
            user = User.from_row(row)
            await db.commit()
        if changed:
            self._forget_user(user_id)
            await self._revocations.enable_user(user_id)
            log.info("user enabled", extra={"userId": user_id, "adminId": admin.user_id})
        return user

    async def force_password_reset(self, admin: Principal, user_id: str) -> tuple[User, int]:
        async def require_new_password(db: AsyncSession, row: UserRow, now: datetime) -> None:
            row.password_reset_required = True
            row.updated_at = now

        return await self._change_ending_sessions(admin, user_id, require_new_password,
                                                  reason="PASSWORD_RESET_FORCED", event="admin.password-reset-forced")

    async def reset_two_factor(self, admin: Principal, user_id: str) -> tuple[User, int]:
        """For an owner who lost the authenticator and the recovery codes, once they proved who they
        are out of band: two-factor login off and every session ended; the password logs in again."""
        async def turn_off(db: AsyncSession, row: UserRow, now: datetime) -> None:
            if row.totp_enabled_at is None:  # off (a pending enrolment asks nothing at login)
                raise not_enabled()
            await TwoFactorRepository(db).turn_off(row, now)

        return await self._change_ending_sessions(admin, user_id, turn_off,
                                                  reason="TWO_FACTOR_RESET", event="admin.two-factor-reset")

    async def _change_ending_sessions(
        self, admin: Principal, user_id: str, change: Callable[[AsyncSession, UserRow, datetime], Awaitable[None]],
        *, reason: str, event: str,
    ) -> tuple[User, int]:
        """``change`` to another account, then every session of it ended and the change audited as
        ``event``, in one transaction; the account and how many sessions ended."""
        _require_admin(admin)
        _require_other(admin, user_id)
        now = _now()
        async with self._sessions() as db:
            row = await self._locked(db, user_id)
            await change(db, row, now)
            ended = await SessionRepository(db).revoke_all_of_user(user_id, now, reason)
            self._audit.record(db, event, actor=Actor.of(admin), subject_user_id=user_id,
                               details={"sessionsRevoked": len(ended)}, now=now)
            user = User.from_row(row)
            await db.commit()
        await self._announce(user_id, ended)
        log.info(event, extra={"userId": user_id, "adminId": admin.user_id, "sessionsRevoked": len(ended)})
        return user, len(ended)

    async def set_role(self, admin: Principal, user_id: str, role: Role | None) -> User:
        _require_admin(admin)
        _require_other(admin, user_id)
        if role is None:
            raise InvalidArgument("role is required",
                                  violations=[FieldViolation("role", "must be ROLE_USER or ROLE_ADMIN")])
        now = _now()
        async with self._sessions() as db:
            row = await self._locked(db, user_id)
            ended: list[str] = []
            if row.role != role:
                self._audit.record(db, "admin.role-set", actor=Actor.of(admin), subject_user_id=user_id,
                                   details={"role": role, "previousRole": row.role}, now=now)
                row.role = role
                row.updated_at = now
                # The role travels in access tokens: end them, the new role applies at next login.
                ended = await SessionRepository(db).revoke_all_of_user(user_id, now, "ROLE_CHANGED")
            user = User.from_row(row)
            await db.commit()
        await self._announce(user_id, ended)
        log.info("user role set", extra={"userId": user_id, "adminId": admin.user_id, "role": role})
        return user

    async def list_audit_events(
        self, admin: Principal, *, type: str, since: datetime | None, until: datetime | None, user_id: str,
        requested_page_size: int, page_token: str,
    ) -> AuditPage:
        """Everyone's trail, or one account's (as actor or subject) with ``user_id``."""
        _require_admin(admin)
        kind, prefix = type_filter(type)
        where = AuditFilter(type=kind, type_prefix=prefix, since=since, until=until, involving=user_id or None)
        return await self._audit_log.page(where, requested_page_size=requested_page_size, page_token=page_token)

    async def _locked(self, db: AsyncSession, user_id: str) -> UserRow:
        row = await UserRepository(db).get_for_update(user_id)
        if row is None:
            raise _not_found(user_id)
        return row

    async def _announce(self, user_id: str, ended_sessions: list[str], *, disabled: bool = False) -> None:
        """After the commit: this replica forgets the account's cached state, every replica learns."""
        self._forget_user(user_id)
        if disabled:
            await self._revocations.disable_user(user_id)
        for session_id in ended_sessions:
            await self._revocations.revoke_session(session_id)


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin or principal.auth_kind != "jwt":
        raise PermissionDenied("this call is for administrators only")


def _require_id(user_id: str) -> None:
    if not user_id:
        raise InvalidArgument("id is required", violations=[FieldViolation("id", "is required")])


def _require_other(admin: Principal, user_id: str) -> None:
    _require_id(user_id)
    if user_id == admin.user_id:
        raise FailedPrecondition("an administrator cannot do this to their own account",
                                 reason="SELF_ADMINISTRATION")


def _not_found(user_id: str) -> NotFound:
    return NotFound("no such user", metadata={"id": user_id})
