"""Identity rules: registration, login, refresh rotation, logout, API keys.

Never sees protobuf types. Every method commits each session at most once and raises
typed ApiErrors carrying their ErrorReason. Register and Login hold no database
connection while a password is hashed (the pool would be the first thing a login storm
exhausts): they read in one short session, hash, then write in a new one.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import TTLCache
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.repository import AuditFilter
from the0.server.audit.service import AuditLog, AuditPage, type_filter
from the0.server.audit.trail import Actor, AuditTrail
from the0.server.db.models import UserRow
from the0.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from the0.server.identity import api_key_secrets
from the0.server.identity import scopes as key_scopes
from the0.server.identity.api_key_secrets import ApiKeyHasher
from the0.server.identity.authenticator import Authenticator
from the0.server.identity.domain import (
    ApiKey,
    ApiKeyPage,
    CreatedApiKey,
    IssuedTokens,
    SessionInfo,
    SessionPage,
    User,
)
from the0.server.identity.password_policy import PasswordPolicy
from the0.server.identity.passwords import Passwords
from the0.server.identity.principal import Principal
from the0.server.identity.repository import (
    ApiKeyRepository,
    CredentialRepository,
    SessionRepository,
    UserRepository,
    new_id,
)
from the0.server.identity.revocations import Revocations
from the0.server.identity.throttle import Reservation, Throttles
from the0.server.identity.tokens import AccessTokens, hash_refresh_token, new_refresh_token
from the0.server.identity.totp import hash_challenge_token
from the0.server.identity.two_factor import (
    CHALLENGE_MAX_FAILURES,
    SecondFactor,
    SecondFactorChallenge,
    TwoFactor,
    challenge_invalid,
    code_invalid,
)
from the0.server.identity.two_factor_repository import TwoFactorRepository
from the0.server.pagination import Cursor, PageTokens, page_size

log = logging.getLogger("the0.identity")
PROFILE_CACHE_SECONDS = 5.0
PROFILE_CACHE_ENTRIES = 10_000

EMAIL_MAX = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,50}$")
PASSWORD_MAX = 1024
NAME_MAX = 100
API_KEY_NAME_MIN, API_KEY_NAME_MAX = 3, 50
SCOPE_GRAMMAR = "full, read, or <resource>:read|write with resource one of " + ", ".join(key_scopes.KEY_RESOURCES)


def normalise_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    username: str
    first_name: str = ""
    last_name: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


class AuthService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        tokens: AccessTokens,
        revocations: Revocations,
        throttles: Throttles,
        refresh_token_ttl: timedelta,
        registration_enabled: bool,
        page_tokens: PageTokens,
        audit: AuditTrail,
        audit_log: AuditLog,
        two_factor: TwoFactor,
        policy: PasswordPolicy | None = None,
    ) -> None:
        self._two_factor = two_factor
        self._page_tokens = page_tokens
        self._audit = audit
        self._audit_log = audit_log
        self._policy = policy or PasswordPolicy()
        self._sessions = sessions
        self._passwords = passwords
        self._tokens = tokens
        self._revocations = revocations
        self._throttles = throttles
        self._refresh_ttl = refresh_token_ttl
        self._registration_enabled = registration_enabled
        # GetCurrentUser runs on every dashboard page load and CLI command; a database round
        # trip for a profile that almost never changes made it cost five times an authenticated
        # no-op. Per replica: a login here evicts the entry, another replica's change shows within
        # the TTL. Authorization never reads this cache (credentials are checked per request).
        self._profiles: TTLCache[str, User] = TTLCache(maxsize=PROFILE_CACHE_ENTRIES, ttl=PROFILE_CACHE_SECONDS)

    async def register(self, form: Registration, *, client_address: str, user_agent: str = "") -> IssuedTokens:
        if not self._registration_enabled:
            raise FailedPrecondition("registration is switched off on this server", reason="REGISTRATION_DISABLED")
        email = normalise_email(form.email)
        violations = validate_registration(form, email, self._policy)
        if violations:
            raise InvalidArgument("the registration has invalid fields: " + ", ".join(v.field for v in violations),
                                  violations=violations)
        # A full hashing queue refuses now, not after three transactions (most of a flood).
        self._passwords.refuse_if_full(new_password=True)
        reservation = await self._throttles.reserve_registration(client_address)
        async with self._sessions() as db:  # cheap refusal before the expensive hash
            await _refuse_taken(UserRepository(db), email, form.username)
        password_hash = await self._hash_or_refund(form.password, reservation)
        async with self._sessions() as db:
            users = UserRepository(db)
            now = _now()
            user = UserRow(
                id=new_id(), email=email, username=form.username, password_hash=password_hash,
                first_name=form.first_name.strip(), last_name=form.last_name.strip(), role="user", active=True,
                last_login_at=now, created_at=now, updated_at=now,
            )
            users.add(user)
            try:
                await db.flush()
            except IntegrityError:  # a concurrent registration won the race
                await db.rollback()
                await _refuse_taken(UserRepository(db), email, form.username)
                raise AlreadyExists("the email or username is already registered") from None
            tokens = await self._start_session(db, user, now, user_agent=user_agent, client_address=client_address,
                                               how="register")
            await db.commit()
        await self._throttles.remember_address(email, client_address)
        log.info("user registered", extra={"userId": user.id})
        return tokens

    async def login(self, email: str, password: str, *, client_address: str, user_agent: str = ""
                    ) -> IssuedTokens | SecondFactorChallenge:
        """Tokens; or, for an account with two-factor login, a challenge for ``complete_login``."""
        email = normalise_email(email)
        violations = [FieldViolation(f, "is required") for f, v in (("email", email), ("password", password)) if not v]
        if len(password) > PASSWORD_MAX:
            violations.append(FieldViolation("password", f"must be at most {PASSWORD_MAX} characters"))
        if violations:
            raise InvalidArgument("the login has invalid fields", violations=violations)
        self._passwords.refuse_if_full()  # before any database work, as in register
        # Counted before the first await that could let a parallel guess through.
        reservation = await self._throttles.reserve_login(email, client_address)
        async with self._sessions() as db:
            found = await UserRepository(db).find_by_email(email)
        try:
            if found is None:
                verified = await self._passwords.verify_nobody(password)
            else:
                verified = await self._passwords.verify(found.password_hash, password)
        except ResourceExhausted:  # the hashing queue is full: this attempt did not happen
            await self._throttles.refund(reservation)
            raise
        if found is None or not verified.ok or not found.active:
            why = "UNKNOWN_EMAIL" if found is None else "INVALID_CREDENTIALS" if not verified.ok else "DISABLED"
            await self._login_failed(email, None if found is None else found.id, why)
            raise Unauthenticated("wrong email or password", reason="INVALID_CREDENTIALS")
        if found.password_reset_required:  # said only to someone who knows the password
            await self._throttles.succeeded(reservation)
            await self._login_failed(email, found.id, "PASSWORD_RESET_REQUIRED")
            raise FailedPrecondition("an administrator requires a new password for this account: reset it",
                                     reason="PASSWORD_RESET_REQUIRED")
        new_hash = None
        if verified.needs_rehash:
            with contextlib.suppress(ResourceExhausted):  # rehashed on a quieter login instead
                new_hash = await self._passwords.hash(password)
        async with self._sessions() as db:
            user = await UserRepository(db).get(found.id)
            if user is None or not user.active:  # deleted or deactivated while we hashed
                raise Unauthenticated("wrong email or password", reason="INVALID_CREDENTIALS")
            now = _now()
            if new_hash is not None and user.password_hash == found.password_hash:
                user.password_hash = new_hash
            if user.totp_enabled_at is not None:  # the password alone never starts a session
                challenge = await self._two_factor.issue_challenge(db, user, now)
                await db.commit()
                await self._throttles.refund(reservation)  # only a completed second factor makes the address known
                return challenge
            user.last_login_at = now
            tokens = await self._start_session(db, user, now, user_agent=user_agent, client_address=client_address,
                                               how="password")
            await db.commit()
        # The profile as committed (new lastLoginAt), not an empty entry: the first
        # GetCurrentUser after a login (the dashboard's) needs no database read.
        self._profiles[user.id] = User.from_row(user)
        await self._throttles.succeeded(reservation)
        return tokens

    async def _login_failed(self, email: str, user_id: str | None, why: str) -> None:
        """A refused login changes nothing, so it is recorded in a transaction of its own. Only
        attempts that reached the password check are: a throttled one writes nothing (a flood
        must not become a flood of rows); the email is kept for an unknown account (who is
        being tried), never the password."""
        async with self._sessions() as db:
            details: dict[str, str | int | bool | None] = {"reason": why}
            if user_id is None:
                details["email"] = email[:254]
            self._audit.record(db, "login.failed", actor=None, subject_user_id=user_id, details=details)
            await db.commit()

    async def complete_login(self, challenge_token: str, factor: SecondFactor, *, client_address: str,
                             user_agent: str = "") -> IssuedTokens:
        """The second step of a login: the challenge and a TOTP or recovery code give the tokens."""
        violations = factor.violations()
        if not challenge_token:
            violations.insert(0, FieldViolation("challengeToken", "is required"))
        if violations:
            raise InvalidArgument("the request has invalid fields", violations=violations)
        token_hash = hash_challenge_token(challenge_token)
        async with self._sessions() as db:
            challenge = await TwoFactorRepository(db).find_challenge(token_hash)
            now = _now()
            if (challenge is None or challenge.used_at is not None or challenge.expires_at <= now
                    or challenge.failed_attempts >= CHALLENGE_MAX_FAILURES):
                raise challenge_invalid()
            challenge_id = challenge.id
            found = await UserRepository(db).get(challenge.user_id)
        if found is None or not found.active or found.totp_enabled_at is None:
            raise challenge_invalid()
        # A code is a password too: counted per account and address before it is checked.
        reservation = await self._throttles.reserve_second_factor(found.email, client_address)
        async with self._sessions() as db:
            repo = TwoFactorRepository(db)
            user = await UserRepository(db).get_for_update(found.id)
            now = _now()
            if user is None or not user.active or user.totp_enabled_at is None:
                raise challenge_invalid()
            if user.password_reset_required:  # as Login answers; the code is not spent
                await db.rollback()
                await self._throttles.refund(reservation)
                raise FailedPrecondition("an administrator requires a new password for this account: reset it",
                                         reason="PASSWORD_RESET_REQUIRED")
            if not await self._two_factor.accept(db, user, factor, now):
                await db.rollback()
                await repo.count_failure(challenge_id)
                await db.commit()
                await self._login_failed(found.email, found.id, "TOTP_CODE_INVALID")
                raise code_invalid()
            if not await repo.claim_challenge(challenge_id, now):  # used by a racing request, or expired
                raise challenge_invalid()
            user.last_login_at = now
            tokens = await self._start_session(db, user, now, user_agent=user_agent, client_address=client_address,
                                               how="recovery-code" if factor.recovery_code else "totp")
            await repo.mark_second_factor(tokens.session_id, now)
            await db.commit()
        self._profiles[user.id] = User.from_row(user)
        await self._throttles.succeeded(reservation)
        return tokens

    async def _hash_or_refund(self, password: str, reservation: Reservation) -> str:
        try:
            return await self._passwords.hash(password)
        except ResourceExhausted:
            await self._throttles.refund(reservation)
            raise

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        if not refresh_token:
            raise InvalidArgument("refreshToken is required",
                                  violations=[FieldViolation("refreshToken", "is required")])
        async with self._sessions() as db:
            repo = SessionRepository(db)
            found = await repo.find_refresh_token(hash_refresh_token(refresh_token))
            now = _now()
            if found is None:
                raise _refresh_invalid()
            token, session = found
            if session.revoked_at is not None or token.expires_at <= now:
                raise _refresh_invalid()
            if token.rotated_at is not None or not await repo.mark_rotated(token.id, now):
                # Someone holds a token that was already exchanged: assume it was stolen.
                await repo.revoke(session.id, now, "REFRESH_TOKEN_REUSED")
                self._audit.record(db, "session.revoked", actor=None, subject_user_id=session.user_id,
                                   details={"sessionId": session.id, "reason": "REFRESH_TOKEN_REUSED"}, now=now)
                await db.commit()
                await self._revocations.revoke_session(session.id)
                log.warning("refresh token reused; session revoked", extra={"sessionId": session.id})
                raise Unauthenticated("this refresh token was already used; the session is revoked",
                                      reason="REFRESH_TOKEN_REUSED")
            user = await UserRepository(db).get(session.user_id)
            if user is None or not user.active or user.password_reset_required:
                raise _refresh_invalid()
            session.last_used_at = now
            tokens = self._issue(db, user, session.id, now)
            await db.commit()
        return tokens

    async def logout(self, principal: Principal) -> None:
        assert principal.session_id is not None  # USER_SESSION policy: JWT only
        async with self._sessions() as db:
            await SessionRepository(db).revoke(principal.session_id, _now(), "LOGOUT")
            self._audit.record(db, "logout", actor=Actor.of(principal), subject_user_id=principal.user_id,
                               details={"sessionId": principal.session_id})
            await db.commit()
        await self._revocations.revoke_session(principal.session_id)

    async def list_sessions(self, principal: Principal, *, requested_page_size: int, page_token: str) -> SessionPage:
        limit = page_size(requested_page_size)
        scope = f"ListSessions:{principal.user_id}"
        after = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as db:
            rows = await SessionRepository(db).open_page_of_user(
                principal.user_id, alive_since=_now() - self._refresh_ttl, after=after, limit=limit + 1)
        rows, next_token = self._page_tokens.page(
            rows, limit, scope=scope, cursor=lambda row: Cursor(row.created_at, row.id)
        )
        return SessionPage([SessionInfo.from_row(r, current=r.id == principal.session_id) for r in rows],
                           next_token)

    async def revoke_session(self, principal: Principal, session_id: str) -> None:
        if not session_id:
            raise InvalidArgument("id is required", violations=[FieldViolation("id", "is required")])
        async with self._sessions() as db:
            repo = SessionRepository(db)
            if await repo.get_of_user(principal.user_id, session_id) is None:
                raise NotFound("no such session", metadata={"id": session_id})
            await repo.revoke(session_id, _now(), "REVOKED")
            self._audit.record(db, "session.revoked", actor=Actor.of(principal), subject_user_id=principal.user_id,
                               details={"sessionId": session_id})
            await db.commit()
        await self._revocations.revoke_session(session_id)

    async def logout_everywhere(self, principal: Principal, *, keep_current: bool) -> int:
        """Ends the caller's sessions (but the current one with ``keep_current``); how many."""
        async with self._sessions() as db:
            ended = await SessionRepository(db).revoke_all_of_user(
                principal.user_id, _now(), "LOGOUT_EVERYWHERE",
                except_session=principal.session_id if keep_current else None)
            self._audit.record(db, "sessions.revoked-all", actor=Actor.of(principal),
                               subject_user_id=principal.user_id,
                               details={"sessionsRevoked": len(ended), "keepCurrent": keep_current})
            await db.commit()
        for session_id in ended:
            await self._revocations.revoke_session(session_id)
        return len(ended)

    async def list_audit_events(
        self, principal: Principal, *, type: str, since: datetime | None, until: datetime | None,
        requested_page_size: int, page_token: str,
    ) -> AuditPage:
        """The caller's own trail: events where they are the actor or the account concerned."""
        kind, prefix = type_filter(type)
        where = AuditFilter(type=kind, type_prefix=prefix, since=since, until=until, involving=principal.user_id)
        return await self._audit_log.page(where, requested_page_size=requested_page_size, page_token=page_token,
                                          viewer=principal.user_id)

    def forget_profile(self, user_id: str) -> None:
        """An admin changed the account: this replica's next GetCurrentUser reads it anew."""
        self._profiles.pop(user_id, None)

    async def current_user(self, principal: Principal) -> User:
        if (cached := self._profiles.get(principal.user_id)) is not None:
            return cached
        async with self._sessions() as db:
            row = await UserRepository(db).get(principal.user_id)
        if row is None:
            raise NotFound("the account no longer exists", metadata={"id": principal.user_id})
        user = User.from_row(row)
        self._profiles[principal.user_id] = user
        return user

    async def _start_session(
        self, db: AsyncSession, user: UserRow, now: datetime, *, user_agent: str, client_address: str, how: str
    ) -> IssuedTokens:
        session = await SessionRepository(db).start(user.id, now, user_agent=user_agent,
                                                    client_address=client_address)
        self._audit.record(db, "login.succeeded", actor=Actor.user(user.id, "password"), subject_user_id=user.id,
                           details={"sessionId": session.id, "via": how}, now=now)
        return self._issue(db, user, session.id, now)

    def _issue(self, db: AsyncSession, user: UserRow, session_id: str, now: datetime) -> IssuedTokens:
        access, access_expires = self._tokens.issue(user_id=user.id, session_id=session_id, role=user.role, now=now)
        refresh = new_refresh_token()
        refresh_expires = now + self._refresh_ttl
        SessionRepository(db).add_refresh_token(session_id, hash_refresh_token(refresh), now, refresh_expires)
        return IssuedTokens(User.from_row(user), access, access_expires, refresh, refresh_expires, session_id)


def validate_registration(form: Registration, email: str, policy: PasswordPolicy | None = None) -> list[FieldViolation]:
    violations = []
    if not email:
        violations.append(FieldViolation("email", "is required"))
    elif len(email) > EMAIL_MAX or not _EMAIL.match(email):
        violations.append(FieldViolation("email", "must be an email address of at most 254 characters"))
    if not form.username:
        violations.append(FieldViolation("username", "is required"))
    elif not USERNAME.match(form.username):
        violations.append(FieldViolation("username", "must be 3 to 50 letters, digits, '_', '.' or '-'"))
    if not form.password:
        violations.append(FieldViolation("password", "is required"))
    else:
        violations += (policy or PasswordPolicy()).violations("password", form.password, email=email,
                                                              username=form.username)
    for field, value in (("firstName", form.first_name), ("lastName", form.last_name)):
        if len(value) > NAME_MAX:
            violations.append(FieldViolation(field, f"must be at most {NAME_MAX} characters"))
    return violations


async def _refuse_taken(users: UserRepository, email: str, username: str) -> None:
    email_taken, username_taken = await users.taken(email=email, username=username)
    if email_taken:
        raise AlreadyExists("an account with this email already exists", metadata={"field": "email"})
    if username_taken:
        raise AlreadyExists("this username is taken", metadata={"field": "username", "username": username})


def _refresh_invalid() -> Unauthenticated:
    return Unauthenticated("the refresh token is unknown, expired or revoked", reason="REFRESH_TOKEN_INVALID")


class ApiKeyService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        hasher: ApiKeyHasher,
        authenticator: Authenticator,
        revocations: Revocations,
        page_tokens: PageTokens,
        audit: AuditTrail,
    ) -> None:
        self._audit = audit
        self._sessions = sessions
        self._hasher = hasher
        self._authenticator = authenticator
        self._revocations = revocations
        self._page_tokens = page_tokens

    async def create(self, principal: Principal, *, name: str, expires_at: datetime | None,
                     scopes: Sequence[str] = ()) -> CreatedApiKey:
        name = name.strip()
        now = _now()
        violations = [FieldViolation(f"apiKey.scopes[{i}]", f"{scope!r} is not a scope: {SCOPE_GRAMMAR}")
                      for i, scope in key_scopes.invalid(scopes)]
        if len(scopes) > key_scopes.MAX_SCOPES:
            violations.append(FieldViolation("apiKey.scopes", f"at most {key_scopes.MAX_SCOPES} scopes"))
        if not name:
            violations.append(FieldViolation("apiKey.name", "is required"))
        elif not API_KEY_NAME_MIN <= len(name) <= API_KEY_NAME_MAX:
            violations.append(FieldViolation("apiKey.name", "must be 3 to 50 characters"))
        if expires_at is not None and expires_at <= now:
            violations.append(FieldViolation("apiKey.expireTime", "must be in the future"))
        if violations:
            raise InvalidArgument("the API key has invalid fields: " + ", ".join(v.field for v in violations),
                                  violations=violations)
        normalised = key_scopes.normalise(scopes)
        secret = api_key_secrets.new_secret()
        async with self._sessions() as db:
            # A key outlives the session: minting one needs the second factor, recently.
            await TwoFactor.require_fresh(db, principal, now)
            keys = ApiKeyRepository(db, principal.user_id)
            if await keys.name_taken(name):
                raise AlreadyExists("you already have an API key with this name", metadata={"name": name})
            row = keys.add(name=name, prefix=api_key_secrets.display_prefix(secret),
                           key_hash=self._hasher.hash(secret), now=now, expires=expires_at,
                           scopes=key_scopes.to_column(normalised))
            self._audit.record(db, "api-key.created", actor=Actor.of(principal), subject_user_id=principal.user_id,
                               details={"apiKeyId": row.id, "name": name, "scopes": key_scopes.to_column(normalised),
                                        "expireTime": expires_at.isoformat() if expires_at else None}, now=now)
            try:
                await db.commit()
            except IntegrityError:
                raise AlreadyExists("you already have an API key with this name", metadata={"name": name}) from None
        return CreatedApiKey(ApiKey.from_row(row, now), secret)

    async def list(self, principal: Principal, *, requested_page_size: int, page_token: str) -> ApiKeyPage:
        limit = page_size(requested_page_size)
        scope = f"ListApiKeys:{principal.user_id}"
        after = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as db:
            rows = await ApiKeyRepository(db, principal.user_id).list_page(after=after, limit=limit + 1)
        now = _now()
        rows, next_token = self._page_tokens.page(
            rows, limit, scope=scope, cursor=lambda row: Cursor(row.created_at, row.id)
        )
        return ApiKeyPage([ApiKey.from_row(r, now) for r in rows], next_token)

    async def revoke(self, principal: Principal, api_key_id: str) -> ApiKey:
        if not api_key_id:
            raise InvalidArgument("id is required", violations=[FieldViolation("id", "is required")])
        async with self._sessions() as db:
            row = await ApiKeyRepository(db, principal.user_id).get(api_key_id)
            if row is None:
                raise NotFound("no such API key", metadata={"id": api_key_id})
            now = _now()
            newly = row.revoked_at is None
            if newly:
                row.revoked_at = now
                self._audit.record(db, "api-key.revoked", actor=Actor.of(principal),
                                   subject_user_id=principal.user_id,
                                   details={"apiKeyId": row.id, "name": row.name}, now=now)
                await db.commit()
        if newly:
            self._authenticator.forget_api_key(row.id)
            await self._revocations.revoke_api_key(row.id)
        return ApiKey.from_row(row, now)


class CredentialHousekeeping:
    """Database reads behind the revocation sets."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def revoked_since(self, since: datetime) -> tuple[list[str], list[str]]:
        async with self._sessions() as db:
            return (
                await SessionRepository(db).revoked_since(since),
                await CredentialRepository(db).api_keys_revoked_since(since),
            )

    async def disabled_since(self, since: datetime) -> list[str]:
        async with self._sessions() as db:
            return await UserRepository(db).disabled_since(since)
