"""Passwords and addresses: change a password, reset a forgotten one, verify an email address.

The server sends no mail. A reset or verification request stores a random token's SHA-256
(never the token) and stages an outbox event in the same transaction —
``user.password-reset-requested`` / ``user.email-verification-requested`` — for the platform's
mailer, with the token sealed under THE0_MAILER_KEY (``secrets/mail.py``; ``python -m
the0.devtools.mailbox`` opens them in development). A token works once, until it expires; a
newer request voids the older ones of the same purpose. Tokens are never logged nor stored in
clear.

A reset request must not say whether the email has an account, by its answer or by its time
(OWASP Forgot Password Cheat Sheet). So it answers once the caller's address limit is checked,
and looks the account up and issues the token after answering (at most ``MAX_PENDING_RESETS``
at a time: more are dropped, as their callers had their answer). Reset mails to one email
address are limited per requesting address (3 an hour) and in all (THE0_RESET_MAILS_PER_EMAIL,
10): more requests answer the same and send nothing, so the form cannot flood someone's
inbox, and one address alone cannot use up the owner's mails.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import Actor, AuditTrail
from the0.server.background import cancel_and_wait
from the0.server.db.models import AccountTokenRow, UserRow
from the0.server.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, Unauthenticated
from the0.server.events.outbox import Outbox
from the0.server.identity.domain import User
from the0.server.identity.password_policy import PASSWORD_MAX, PasswordPolicy
from the0.server.identity.passwords import Passwords
from the0.server.identity.principal import Principal
from the0.server.identity.repository import SessionRepository, UserRepository, new_id
from the0.server.identity.revocations import Revocations
from the0.server.identity.throttle import Throttles
from the0.server.secrets.mail import MailTokens

log = logging.getLogger("the0.identity.recovery")
# Reset requests answered and not yet carried out, at most; each is a few short transactions.
MAX_PENDING_RESETS = 64
PASSWORD_RESET, EMAIL_VERIFICATION = "password_reset", "email_verification"
_EVENTS = {PASSWORD_RESET: "user.password-reset-requested",
           EMAIL_VERIFICATION: "user.email-verification-requested"}


def _now() -> datetime:
    return datetime.now(UTC)


def hash_account_token(token: str) -> str:
    # 256 random bits: a plain SHA-256 cannot be reversed or guessed (as for refresh tokens).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RecoveryTimes:
    password_reset: timedelta
    email_verification: timedelta


class AccountRecovery:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        policy: PasswordPolicy,
        throttles: Throttles,
        revocations: Revocations,
        outbox: Outbox,
        times: RecoveryTimes,
        audit: AuditTrail,
        mail_tokens: MailTokens,
    ) -> None:
        self._audit = audit
        self._mail_tokens = mail_tokens
        # Reset requests being carried out after their answer; finish_pending() lets them finish.
        self._issuing: set[asyncio.Task[None]] = set()
        self._sessions = sessions
        self._passwords = passwords
        self._policy = policy
        self._throttles = throttles
        self._revocations = revocations
        self._outbox = outbox
        self._times = times

    # -- change ------------------------------------------------------------------------------

    async def change_password(self, principal: Principal, current: str, new: str, *, client_address: str) -> int:
        async with self._audit.refusals_of(self._sessions, principal, "change-password"):
            return await self._change_password(principal, current, new, client_address=client_address)

    async def _change_password(self, principal: Principal, current: str, new: str, *, client_address: str) -> int:
        """Returns how many other sessions ended."""
        violations = [FieldViolation(f, "is required") for f, v in (("currentPassword", current),
                                                                    ("newPassword", new)) if not v]
        if len(current) > PASSWORD_MAX:
            violations.append(FieldViolation("currentPassword", f"must be at most {PASSWORD_MAX} characters"))
        if violations:
            raise InvalidArgument("the password change has invalid fields", violations=violations)
        async with self._sessions() as db:
            found = await UserRepository(db).get(principal.user_id)
        if found is None:
            raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
        problems = self._policy.violations("newPassword", new, email=found.email, username=found.username)
        if problems:
            raise InvalidArgument("the new password is not acceptable", violations=problems)
        self._passwords.refuse_if_full(new_password=True)
        # Throttled like a login: a stolen session must not become a password oracle.
        reservation = await self._throttles.reserve_login(found.email, client_address)
        try:
            verified = await self._passwords.verify(found.password_hash, current)
            if not verified.ok:
                raise Unauthenticated("the current password is wrong", reason="INVALID_CREDENTIALS")
            new_hash = await self._passwords.hash(new)
        except ResourceExhausted:
            await self._throttles.refund(reservation)
            raise
        async with self._sessions() as db:
            user = await UserRepository(db).get_for_update(principal.user_id)
            if user is None or user.password_hash != found.password_hash:  # changed meanwhile
                raise Unauthenticated("the current password is wrong", reason="INVALID_CREDENTIALS")
            now = _now()
            user.password_hash = new_hash
            user.password_reset_required = False
            user.updated_at = now
            ended = await SessionRepository(db).revoke_all_of_user(
                user.id, now, "PASSWORD_CHANGED", except_session=principal.session_id)
            await _void_tokens(db, user.id, PASSWORD_RESET, now)
            self._audit.record(db, "password.changed", actor=Actor.of(principal), subject_user_id=user.id,
                               details={"sessionsRevoked": len(ended)}, now=now)
            await db.commit()
        await self._throttles.succeeded(reservation)
        await self._announce(ended)
        log.info("password changed", extra={"userId": principal.user_id, "sessionsRevoked": len(ended)})
        return len(ended)

    # -- reset -------------------------------------------------------------------------------

    async def request_password_reset(self, email: str, *, client_address: str) -> None:
        """Answers before anything depends on the account; the token is issued just after."""
        email = email.strip().lower()
        if not email:
            raise InvalidArgument("email is required", violations=[FieldViolation("email", "is required")])
        await self._throttles.reserve_recovery(client_address)
        if len(self._issuing) >= MAX_PENDING_RESETS:
            log.warning("password reset dropped: too many requests being carried out")
            return
        task = asyncio.create_task(self._issue_password_reset(email, client_address), name="password-reset")
        self._issuing.add(task)
        task.add_done_callback(self._issuing.discard)

    async def _issue_password_reset(self, email: str, client_address: str) -> None:
        try:
            if not await self._throttles.reset_mail_allowed(email, client_address):
                log.info("password reset not mailed: this address had its mails for the hour")
                return
            async with self._sessions() as db:
                found = await UserRepository(db).find_by_email(email)
                # Locked: requests that overlap (the caller no longer waits for the last) must
                # each void the token of the one before.
                user = None if found is None else await UserRepository(db).get_for_update(found.id)
                if user is None or not user.active:
                    return  # nothing to mail; the caller had the same answer either way
                self._issue(db, user, PASSWORD_RESET, await _void_tokens(db, user.id, PASSWORD_RESET, _now()))
                # Anonymous: asking needs no credential. Only for an account that exists (the
                # answer to the caller is the same either way; the trail is not the caller's).
                self._audit.record(db, "password.reset-requested", actor=None, subject_user_id=user.id)
                await db.commit()
            log.info("password reset requested", extra={"userId": user.id})
        except Exception as error:  # noqa: BLE001 - the caller has had its answer; say it here
            log.warning("a password reset request failed; the user can ask again",
                        extra={"error": type(error).__name__})

    async def finish_pending(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for the reset requests already answered (at shutdown, while the
        database is open); cancel what is left, and say how many were lost."""
        if not self._issuing:
            return
        _, late = await asyncio.wait(set(self._issuing), timeout=timeout)
        for task in late:
            await cancel_and_wait(task)
        if late:
            log.warning("password reset requests not carried out at shutdown", extra={"count": len(late)})

    async def reset_password(self, token: str, new: str) -> None:
        if not token or not new:
            raise InvalidArgument("token and newPassword are required", violations=[
                FieldViolation(f, "is required") for f, v in (("token", token), ("newPassword", new)) if not v])
        async with self._sessions() as db:
            found = await self._usable(db, token, PASSWORD_RESET)
            user = await UserRepository(db).get(found.user_id)
        if user is None:
            raise _token_invalid()
        problems = self._policy.violations("newPassword", new, email=user.email, username=user.username)
        if problems:
            raise InvalidArgument("the new password is not acceptable", violations=problems)
        new_hash = await self._passwords.hash(new)
        async with self._sessions() as db:
            now = _now()
            # Single use even under a race: only one UPDATE finds used_at empty.
            claimed = await db.execute(
                update(AccountTokenRow)
                .where(AccountTokenRow.id == found.id, AccountTokenRow.used_at.is_(None),
                       AccountTokenRow.expires_at > now)
                .values(used_at=now)
                .returning(AccountTokenRow.id)
            )
            if claimed.scalar_one_or_none() is None:
                raise _token_invalid()
            row = await UserRepository(db).get_for_update(found.user_id)
            if row is None:
                raise _token_invalid()
            row.password_hash = new_hash
            row.password_reset_required = False
            row.updated_at = now
            ended = await SessionRepository(db).revoke_all_of_user(row.id, now, "PASSWORD_RESET")
            # The mailed token proves control of the address, not who holds it: the actor stays anonymous.
            self._audit.record(db, "password.reset", actor=None, subject_user_id=row.id,
                               details={"sessionsRevoked": len(ended)}, now=now)
            await db.commit()
        await self._announce(ended)
        log.info("password reset", extra={"userId": found.user_id, "sessionsRevoked": len(ended)})

    # -- email verification -----------------------------------------------------------------

    async def request_email_verification(self, principal: Principal, *, client_address: str) -> None:
        await self._throttles.reserve_recovery(client_address)
        async with self._sessions() as db:
            user = await UserRepository(db).get_for_update(principal.user_id)  # as for resets
            if user is None:
                raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
            if user.email_verified_at is not None:
                return
            self._issue(db, user, EMAIL_VERIFICATION, await _void_tokens(db, user.id, EMAIL_VERIFICATION, _now()))
            self._audit.record(db, "email.verification-requested", actor=Actor.of(principal), subject_user_id=user.id)
            await db.commit()

    async def verify_email(self, token: str) -> User:
        if not token:
            raise InvalidArgument("token is required", violations=[FieldViolation("token", "is required")])
        async with self._sessions() as db:
            found = await self._usable(db, token, EMAIL_VERIFICATION)
            now = _now()
            claimed = await db.execute(
                update(AccountTokenRow)
                .where(AccountTokenRow.id == found.id, AccountTokenRow.used_at.is_(None))
                .values(used_at=now)
                .returning(AccountTokenRow.id)
            )
            user = await UserRepository(db).get_for_update(found.user_id)
            if claimed.scalar_one_or_none() is None or user is None:
                raise _token_invalid()
            user.email_verified_at = now
            user.updated_at = now
            self._audit.record(db, "email.verified", actor=None, subject_user_id=user.id,
                               details={"email": user.email}, now=now)
            await db.commit()
            return User.from_row(user)

    # -- parts -------------------------------------------------------------------------------

    def _issue(self, db: AsyncSession, user: UserRow, purpose: str, now: datetime) -> None:
        token = secrets.token_urlsafe(32)
        ttl = self._times.password_reset if purpose == PASSWORD_RESET else self._times.email_verification
        expires = now + ttl
        db.add(AccountTokenRow(id=new_id(), user_id=user.id, purpose=purpose, token_hash=hash_account_token(token),
                               created_at=now, expires_at=expires))
        # The mailer needs the token itself: sealed for it alone, as the row and the stream keep it.
        event_type = _EVENTS[purpose]
        self._outbox.add(db, event_type, {
            "userId": user.id, "email": user.email, "username": user.username,
            "sealedToken": self._mail_tokens.seal(event_type, user.id, token),
            "expireTime": expires.isoformat().replace("+00:00", "Z"),
        })

    async def _usable(self, db: AsyncSession, token: str, purpose: str) -> AccountTokenRow:
        row = (await db.execute(select(AccountTokenRow).where(
            AccountTokenRow.token_hash == hash_account_token(token), AccountTokenRow.purpose == purpose,
        ))).scalar_one_or_none()
        if row is None or row.used_at is not None or row.expires_at <= _now():
            raise _token_invalid()
        return row

    async def _announce(self, ended_sessions: list[str]) -> None:
        for session_id in ended_sessions:
            await self._revocations.revoke_session(session_id)


async def _void_tokens(db: AsyncSession, user_id: str, purpose: str, now: datetime) -> datetime:
    """Marks the account's unused tokens of ``purpose`` used (a newer one replaces them); returns ``now``."""
    await db.execute(
        update(AccountTokenRow)
        .where(AccountTokenRow.user_id == user_id, AccountTokenRow.purpose == purpose,
               AccountTokenRow.used_at.is_(None))
        .values(used_at=now)
    )
    return now


def _token_invalid() -> InvalidArgument:
    return InvalidArgument("the token is unknown, already used or expired; ask for a new one",
                           reason="ACCOUNT_TOKEN_INVALID")
