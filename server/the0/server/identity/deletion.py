"""Account deletion: the owner, with their password, ends the account for good.

One transaction does everything the database holds: each domain above identity erases the owner's
data through an ``AccountEraser`` the composition root hands in (bots are stopped through the outbox
exactly as DeleteBot stops them, so the runtime hears it), API keys are revoked, sessions ended,
unused mailed tokens voided, the account row anonymised (email and username freed) and disabled, and
``user.deleted`` staged for the platform. After the commit every replica learns at once (the same
fan-out as DisableUser: ``identity/revocations.py``). What is removed and what is kept:
docs/accounts.md.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import Actor, AuditTrail
from the0.server.db.models import AccountTokenRow, ApiKeyRow
from the0.server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from the0.server.events.outbox import Outbox
from the0.server.identity.password_policy import PASSWORD_MAX
from the0.server.identity.passwords import Passwords
from the0.server.identity.principal import Principal
from the0.server.identity.repository import SessionRepository, UserRepository
from the0.server.identity.revocations import Revocations
from the0.server.identity.throttle import Throttles
from the0.server.identity.two_factor import SecondFactor, TwoFactor, code_invalid
from the0.server.identity.two_factor_repository import TwoFactorRepository

log = logging.getLogger("the0.identity.deletion")
# Erases one owner's data of a domain inside the deletion's transaction; returns counts by name
# (botsStopped, botsDeleted, backtestsDeleted, customBotsDeleted).
AccountEraser = Callable[[AsyncSession, str], Awaitable[dict[str, int]]]
# No password hashes to this: the anonymised row can never log in (and its email is unknown anyway).
UNUSABLE_PASSWORD_HASH = "!account-deleted"
DELETED_EMAIL_DOMAIN = "deleted.invalid"  # RFC 2606: can never be a real address


# Random, not derived from the id: someone who knows an id must not be able to register the
# anonymous email or username first and so make the deletion fail on a unique index.
def anonymous_email() -> str:
    return f"deleted-{secrets.token_hex(16)}@{DELETED_EMAIL_DOMAIN}"


def anonymous_username() -> str:
    return f"deleted-{secrets.token_hex(16)}"  # 40 characters, within the 50 allowed


class AccountDeletion:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        throttles: Throttles,
        revocations: Revocations,
        outbox: Outbox,
        forget_user: Callable[[str], None],
        two_factor: TwoFactor,
        audit: AuditTrail,
    ) -> None:
        self._two_factor = two_factor
        self._audit = audit
        self._sessions = sessions
        self._passwords = passwords
        self._throttles = throttles
        self._revocations = revocations
        self._outbox = outbox
        self._forget_user = forget_user
        # Set by the composition root, in order: bots (stopped first), backtests, custom bots.
        self.erasers: Sequence[AccountEraser] = ()

    async def delete_account(self, principal: Principal, password: str, factor: SecondFactor, *,
                             client_address: str) -> dict[str, int]:
        async with self._audit.refusals_of(self._sessions, principal, "delete-account"):
            return await self._delete_account(principal, password, factor, client_address=client_address)

    async def _delete_account(self, principal: Principal, password: str, factor: SecondFactor, *,
                             client_address: str) -> dict[str, int]:
        """Returns what was done, by count. ``factor`` is needed when two-factor login is on."""
        if not password:
            raise InvalidArgument("password is required", violations=[FieldViolation("password", "is required")])
        if (factor.code or factor.recovery_code) and factor.violations():
            raise InvalidArgument("the request has invalid fields", violations=factor.violations())
        if len(password) > PASSWORD_MAX:
            raise InvalidArgument("password is too long", violations=[
                FieldViolation("password", f"must be at most {PASSWORD_MAX} characters")])
        if principal.is_admin:
            # Like DisableUser on oneself: the last admin must not be able to remove every admin.
            raise FailedPrecondition("an administrator's account is deleted after another admin demotes it",
                                     reason="SELF_ADMINISTRATION")
        async with self._sessions() as db:
            found = await UserRepository(db).get(principal.user_id)
        if found is None or found.deleted_at is not None:
            raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
        # Throttled like a login: a stolen session must not become a password oracle.
        reservation = await self._throttles.reserve_login(found.email, client_address)
        try:
            verified = await self._passwords.verify(found.password_hash, password)
        except ResourceExhausted:
            await self._throttles.refund(reservation)
            raise
        if not verified.ok:
            raise Unauthenticated("the password is wrong", reason="INVALID_CREDENTIALS")
        done, ended, keys = await self._erase(principal, found.password_hash, factor)
        await self._throttles.succeeded(reservation)
        self._forget_user(principal.user_id)
        await self._revocations.disable_user(principal.user_id)
        for session_id in ended:
            await self._revocations.revoke_session(session_id)
        for key_id in keys:
            await self._revocations.revoke_api_key(key_id)
        log.info("account deleted", extra={"userId": principal.user_id, **done})
        return done

    async def _erase(self, principal: Principal, password_hash: str, factor: SecondFactor
                     ) -> tuple[dict[str, int], list[str], list[str]]:
        user_id = principal.user_id
        async with self._sessions() as db, db.begin():
            row = await UserRepository(db).get_for_update(user_id)
            if row is None or row.deleted_at is not None or row.password_hash != password_hash:
                raise Unauthenticated("the password is wrong", reason="INVALID_CREDENTIALS")  # changed meanwhile
            now = datetime.now(UTC)
            # A stolen session plus a phished password must not be enough: the second factor too.
            if row.totp_enabled_at is not None and (
                    factor.violations() or not await self._two_factor.accept(db, row, factor, now)):
                raise code_invalid()
            done = {"botsStopped": 0, "botsDeleted": 0, "backtestsDeleted": 0, "customBotsDeleted": 0}
            for erase in self.erasers:
                done |= await erase(db, user_id)
            keys = list((await db.execute(
                update(ApiKeyRow).where(ApiKeyRow.user_id == user_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=now).returning(ApiKeyRow.id))).scalars())
            ended = await SessionRepository(db).revoke_all_of_user(user_id, now, "ACCOUNT_DELETED")
            await db.execute(update(AccountTokenRow).where(AccountTokenRow.user_id == user_id,
                                                           AccountTokenRow.used_at.is_(None)).values(used_at=now))
            row.email = anonymous_email()
            row.username = anonymous_username()
            row.first_name = row.last_name = ""
            row.password_hash = UNUSABLE_PASSWORD_HASH
            row.email_verified_at = None
            row.password_reset_required = False
            await TwoFactorRepository(db).turn_off(row, now)
            row.active = False
            row.disabled_at = row.deleted_at = row.updated_at = now
            # Only the id: the platform deletes what it holds of this account by id, and an event
            # stream is no place for the personal data being deleted.
            self._outbox.add(db, "user.deleted", {"userId": user_id})
            # The trail outlives the account (no foreign keys): who deleted it, when, and what went.
            self._audit.record(db, "account.deleted", actor=Actor.of(principal), subject_user_id=user_id,
                               details=dict(done), now=now)
        return done | {"apiKeysRevoked": len(keys), "sessionsRevoked": len(ended)}, ended, keys
