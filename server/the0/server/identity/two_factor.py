"""Two-factor login (TOTP, RFC 6238): enrolment, the second step of a login, disabling it.

A secret is sealed before it is stored (``totp.TotpSecrets``) and shown only by
BeginTotpEnrollment; recovery codes are shown only by ConfirmTotpEnrollment and stored
hashed. A code counts once: the time step of the last accepted code is kept and only a
later step is accepted (±1 step window). Every code check is throttled as a login attempt
of the account from the caller's address (``throttle.py``): a wrong code stays counted.
Never logs a secret or a code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import Actor, AuditTrail
from the0.server.db.models import UserRow
from the0.server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from the0.server.identity import totp
from the0.server.identity.passwords import Passwords
from the0.server.identity.principal import Principal
from the0.server.identity.repository import UserRepository
from the0.server.identity.throttle import Throttles
from the0.server.identity.totp import TotpSecrets
from the0.server.identity.two_factor_repository import TwoFactorRepository

log = logging.getLogger("the0.identity")
CHALLENGE_TTL = timedelta(minutes=5)
# Wrong codes a challenge survives; the login throttle limits them across challenges too.
CHALLENGE_MAX_FAILURES = 5
# How recent a session's second factor must be for CreateApiKey.
FRESH_SECOND_FACTOR = timedelta(minutes=10)
PASSWORD_MAX = 1024
METHODS = ("totp", "recovery_code")


@dataclass(frozen=True, slots=True)
class TotpEnrollment:
    secret: str
    provisioning_uri: str


@dataclass(frozen=True, slots=True)
class SecondFactorChallenge:
    """What Login answers instead of tokens when the account has two-factor login on."""

    challenge_token: str
    expires_at: datetime
    methods: tuple[str, ...] = METHODS


@dataclass(frozen=True, slots=True)
class SecondFactor:
    """What the caller offers: exactly one of a TOTP code and a recovery code."""

    code: str = ""
    recovery_code: str = ""

    def violations(self) -> list[FieldViolation]:
        if bool(self.code) == bool(self.recovery_code):
            message = "give exactly one of code and recoveryCode"
            return [FieldViolation("code", message), FieldViolation("recoveryCode", message)]
        if self.code and not totp.is_code(self.code):
            return [FieldViolation("code", "must be 6 digits")]
        return []


def _now() -> datetime:
    return datetime.now(UTC)


def code_invalid() -> Unauthenticated:
    return Unauthenticated("the code is wrong, expired or already used", reason="TOTP_CODE_INVALID")


def challenge_invalid() -> Unauthenticated:
    return Unauthenticated("the second-factor challenge is unknown, expired or used: log in again",
                           reason="SECOND_FACTOR_CHALLENGE_INVALID")


class TwoFactor:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        throttles: Throttles,
        secrets: TotpSecrets,
        forget_profile: Callable[[str], None],
        audit: AuditTrail,
    ) -> None:
        self._audit = audit
        self._sessions = sessions
        self._passwords = passwords
        self._throttles = throttles
        self._secrets = secrets
        self._forget_profile = forget_profile

    # -- enrolment and disabling (a user session) --------------------------------------

    async def begin_enrollment(self, principal: Principal, password: str, *, client_address: str) -> TotpEnrollment:
        async with self._audit.refusals_of(self._sessions, principal, "begin-totp-enrollment"):
            return await self._begin_enrollment(principal, password, client_address=client_address)

    async def _begin_enrollment(self, principal: Principal, password: str, *, client_address: str) -> TotpEnrollment:
        """A new pending secret. Needs the password: a stolen session alone must not be able to turn
        two-factor login on with an attacker's app and lock the owner out."""
        if len(password) > PASSWORD_MAX:
            raise InvalidArgument("password is too long", violations=[
                FieldViolation("password", f"must be at most {PASSWORD_MAX} characters")])
        async with self._sessions() as db:
            found = await UserRepository(db).get(principal.user_id)
        if found is None:
            raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
        if found.totp_enabled_at is not None:
            raise _already_enabled()
        self._passwords.refuse_if_full()
        reservation = await self._throttles.reserve_login(found.email, client_address)
        try:
            verified = await self._passwords.verify(found.password_hash, password)
        except ResourceExhausted:
            await self._throttles.refund(reservation)
            raise
        if not verified.ok:
            raise Unauthenticated("the password is wrong", reason="INVALID_CREDENTIALS")
        await self._throttles.refund(reservation)  # a right password here is no login: it marks nothing known
        secret = totp.new_secret()
        async with self._sessions() as db:
            user = await self._user_for_update(db, principal.user_id)
            if user.totp_enabled_at is not None:
                raise _already_enabled()
            user.totp_secret = self._secrets.seal(user.id, secret)  # pending until confirmed
            user.totp_last_step = None
            await db.commit()
        return TotpEnrollment(secret, totp.provisioning_uri(secret, user.email))

    async def confirm_enrollment(self, principal: Principal, code: str, *, client_address: str) -> list[str]:
        async with self._audit.refusals_of(self._sessions, principal, "confirm-totp-enrollment"):
            return await self._confirm_enrollment(principal, code, client_address=client_address)

    async def _confirm_enrollment(self, principal: Principal, code: str, *, client_address: str) -> list[str]:
        """Turns it on; the new recovery codes (shown once)."""
        factor = SecondFactor(code=code)
        if not code or factor.violations():
            raise InvalidArgument("code must be 6 digits", violations=[FieldViolation("code", "must be 6 digits")])
        async with self._sessions() as db:
            found = await UserRepository(db).get(principal.user_id)
        if found is None:
            raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
        if found.totp_enabled_at is not None:
            raise _already_enabled()
        if found.totp_secret is None:
            raise FailedPrecondition("no enrolment was begun: call BeginTotpEnrollment first",
                                     reason="TOTP_NOT_ENABLED")
        reservation = await self._throttles.reserve_login(found.email, client_address)
        codes = totp.new_recovery_codes()
        async with self._sessions() as db:
            user = await self._user_for_update(db, principal.user_id)
            if user.totp_enabled_at is not None or user.totp_secret != found.totp_secret:
                raise code_invalid()  # another enrolment began meanwhile: this code is of the old secret
            now = _now()
            step = totp.matching_step(self._secrets.open(user.id, user.totp_secret), code, now, after_step=None)
            if step is None:
                raise code_invalid()
            user.totp_enabled_at = now
            user.totp_last_step = step
            user.updated_at = now
            repo = TwoFactorRepository(db)
            await repo.replace_recovery_codes(user.id, [totp.hash_recovery_code(c) for c in codes], now)
            if principal.session_id is not None:
                await repo.mark_second_factor(principal.session_id, now)
            self._audit.record(db, "two-factor.enabled", actor=Actor.of(principal), subject_user_id=user.id,
                               details={"method": "totp"}, now=now)
            await db.commit()
        await self._throttles.succeeded(reservation)
        self._forget_profile(principal.user_id)
        log.info("two-factor login enabled", extra={"userId": principal.user_id})
        return codes

    async def disable(self, principal: Principal, password: str, factor: SecondFactor, *,
                      client_address: str) -> None:
        async with self._audit.refusals_of(self._sessions, principal, "disable-totp"):
            await self._disable(principal, password, factor, client_address=client_address)

    async def _disable(self, principal: Principal, password: str, factor: SecondFactor, *,
                      client_address: str) -> None:
        violations = factor.violations()
        if not password:
            violations.insert(0, FieldViolation("password", "is required"))
        elif len(password) > PASSWORD_MAX:
            violations.insert(0, FieldViolation("password", f"must be at most {PASSWORD_MAX} characters"))
        if violations:
            raise InvalidArgument("the request has invalid fields", violations=violations)
        async with self._sessions() as db:
            found = await UserRepository(db).get(principal.user_id)
        if found is None:
            raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
        if found.totp_enabled_at is None:
            raise not_enabled()
        self._passwords.refuse_if_full()
        reservation = await self._throttles.reserve_login(found.email, client_address)
        try:
            verified = await self._passwords.verify(found.password_hash, password)
        except ResourceExhausted:
            await self._throttles.refund(reservation)
            raise
        if not verified.ok:
            raise Unauthenticated("the password is wrong", reason="INVALID_CREDENTIALS")
        async with self._sessions() as db:
            user = await self._user_for_update(db, principal.user_id)
            if user.totp_enabled_at is None:
                raise not_enabled()
            if not await self.accept(db, user, factor, _now()):
                raise code_invalid()
            await TwoFactorRepository(db).turn_off(user, _now())
            self._audit.record(db, "two-factor.disabled", actor=Actor.of(principal), subject_user_id=user.id,
                               details={"method": "totp"})
            await db.commit()
        await self._throttles.succeeded(reservation)
        self._forget_profile(principal.user_id)
        log.info("two-factor login disabled", extra={"userId": principal.user_id})

    # -- login (used by AuthService) --------------------------------------------------

    async def issue_challenge(self, db: AsyncSession, user: UserRow, now: datetime) -> SecondFactorChallenge:
        """A new challenge in the caller's transaction (committed with it)."""
        token = totp.new_challenge_token()
        expires = now + CHALLENGE_TTL
        await TwoFactorRepository(db).add_challenge(user.id, totp.hash_challenge_token(token), now, expires)
        return SecondFactorChallenge(token, expires)

    async def accept(self, db: AsyncSession, user: UserRow, factor: SecondFactor, now: datetime) -> bool:
        """Whether ``factor`` proves the account's second factor; spends the code if so (in ``db``)."""
        repo = TwoFactorRepository(db)
        if factor.recovery_code:
            return await repo.use_recovery_code(user.id, totp.hash_recovery_code(factor.recovery_code), now)
        if user.totp_secret is None:
            return False
        step = totp.matching_step(self._secrets.open(user.id, user.totp_secret), factor.code, now,
                                  after_step=user.totp_last_step)
        return step is not None and await repo.claim_step(user.id, step)

    @staticmethod
    async def require_fresh(db: AsyncSession, principal: Principal, now: datetime) -> None:
        """CreateApiKey's rule: with two-factor login on, the session proved it within FRESH_SECOND_FACTOR."""
        user = await UserRepository(db).get(principal.user_id)
        if user is None or user.totp_enabled_at is None:
            return
        proved = await TwoFactorRepository(db).second_factor_time(principal.session_id or "")
        if proved is None or now - proved > FRESH_SECOND_FACTOR:
            minutes = int(FRESH_SECOND_FACTOR.total_seconds() // 60)
            raise FailedPrecondition(
                f"this needs a second factor proved within {minutes} minutes: log in again with your code",
                reason="FRESH_SECOND_FACTOR_REQUIRED", metadata={"withinMinutes": str(minutes)})

    @staticmethod
    async def _user_for_update(db: AsyncSession, user_id: str) -> UserRow:
        user = await UserRepository(db).get_for_update(user_id)
        if user is None:
            raise NotFound("the account no longer exists", metadata={"id": user_id})
        return user


def _already_enabled() -> FailedPrecondition:
    return FailedPrecondition("two-factor login is already on: disable it first", reason="TOTP_ALREADY_ENABLED")


def not_enabled() -> FailedPrecondition:
    return FailedPrecondition("two-factor login is not on for this account", reason="TOTP_NOT_ENABLED")
