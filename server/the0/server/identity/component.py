"""Wires the identity domain: one object the composition root creates, starts and stops."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from the0.server.audit.service import AuditLog
from the0.server.audit.trail import AuditTrail
from the0.server.background import BackgroundTasks
from the0.server.db.engine import session_factory
from the0.server.domain_page_tokens import page_tokens_for
from the0.server.events.outbox import Outbox
from the0.server.identity.admin import AdminService
from the0.server.identity.admin_bootstrap import bootstrap_admin
from the0.server.identity.admin_servicer import AdminServicer
from the0.server.identity.api_key_secrets import ApiKeyHasher
from the0.server.identity.authenticator import Authenticator
from the0.server.identity.deletion import AccountDeletion
from the0.server.identity.password_policy import PasswordPolicy
from the0.server.identity.passwords import Passwords
from the0.server.identity.recovery import AccountRecovery, RecoveryTimes
from the0.server.identity.revocations import Revocations
from the0.server.identity.service import ApiKeyService, AuthService, CredentialHousekeeping
from the0.server.identity.servicers import ApiKeyServicer, AuthServicer
from the0.server.identity.throttle import ThrottleLimits, Throttles
from the0.server.identity.tokens import AccessTokens
from the0.server.identity.totp import TotpSecrets
from the0.server.identity.two_factor import TwoFactor
from the0.server.keys import key_ring
from the0.server.nats_link import NatsLink
from the0.server.secrets.box import config_secrets_for
from the0.server.secrets.mail import mail_tokens_for
from the0.server.settings import Settings

log = logging.getLogger("the0.identity")
_ADMIN_RETRY_SECONDS = 2.0


class Identity:
    def __init__(self, settings: Settings, engine: AsyncEngine, nats: NatsLink, outbox: Outbox) -> None:
        self._settings = settings
        sessions = session_factory(engine)
        self.passwords = Passwords(memory_kib=settings.argon2_memory_kib, time_cost=settings.argon2_time_cost,
                                   parallelism=settings.argon2_parallelism,
                                   max_waiting=settings.password_hashing_queue)
        self.throttles = Throttles(sessions, ThrottleLimits(
            login_per_account_address=settings.login_attempts_per_account_address,
            login_per_account=settings.login_attempts_per_account,
            login_per_address=settings.login_attempts_per_address,
            registrations_per_address=settings.registrations_per_address,
            recovery_per_address=settings.account_recovery_per_address,
            reset_mails_per_email=settings.reset_mails_per_email,
        ))
        policy = PasswordPolicy(min_length=settings.password_min_length)
        # One key ring per purpose (keys.py): rotating the JWT key leaves API keys valid.
        tokens = AccessTokens(key_ring(settings.jwt_keys, settings.jwt_secret), settings.jwt_expires_in)
        hasher = ApiKeyHasher(key_ring(settings.api_key_hash_keys, settings.jwt_secret))
        self._sessions = sessions
        audit = AuditTrail(settings.trusted_proxies)
        audit_log = AuditLog(sessions, page_tokens_for(settings, "audit events"))
        housekeeping = CredentialHousekeeping(sessions)
        self.revocations = Revocations(
            nats=nats,
            loader=housekeeping.revoked_since,
            disabled_loader=housekeeping.disabled_since,
            remember=max(settings.jwt_expires_in, timedelta(seconds=settings.api_key_cache_seconds))
            + timedelta(minutes=1),
            sync_seconds=settings.revocation_sync_seconds,
        )
        self.authenticator = Authenticator(
            tokens=tokens, hasher=hasher, revocations=self.revocations, sessions=sessions,
            api_key_cache_seconds=settings.api_key_cache_seconds,
            api_key_miss_cache_seconds=settings.api_key_miss_cache_seconds,
            last_used_flush_seconds=settings.api_key_last_used_flush_seconds,
        )
        # TOTP secrets are sealed with the ring of bot-config secrets (THE0_SECRETS_KEY).
        self.two_factor = TwoFactor(
            sessions=sessions, passwords=self.passwords, throttles=self.throttles,
            secrets=TotpSecrets(config_secrets_for(settings)), forget_profile=self._forget_user, audit=audit,
        )
        self.auth_service = AuthService(
            sessions=sessions, passwords=self.passwords, tokens=tokens, revocations=self.revocations,
            throttles=self.throttles,
            refresh_token_ttl=settings.refresh_token_ttl, registration_enabled=settings.registration_enabled,
            page_tokens=page_tokens_for(settings, "sessions"), policy=policy, audit=audit, audit_log=audit_log,
            two_factor=self.two_factor,
        )
        self.recovery = AccountRecovery(
            sessions=sessions, passwords=self.passwords, policy=policy, throttles=self.throttles,
            revocations=self.revocations, outbox=outbox,
            times=RecoveryTimes(password_reset=timedelta(seconds=settings.password_reset_ttl_seconds),
                                email_verification=timedelta(seconds=settings.email_verification_ttl_seconds)),
            audit=audit, mail_tokens=mail_tokens_for(settings),
        )
        self.api_key_service = ApiKeyService(
            sessions=sessions, hasher=hasher, authenticator=self.authenticator, revocations=self.revocations,
            page_tokens=page_tokens_for(settings, "api keys"), audit=audit,
        )
        self.admin_service = AdminService(
            sessions=sessions, revocations=self.revocations, page_tokens=page_tokens_for(settings, "users"),
            forget_user=self._forget_user, audit=audit, audit_log=audit_log,
        )
        # Its erasers (bots, backtests, custom bots: domains above this one) come from the composition root.
        self.deletion = AccountDeletion(
            sessions=sessions, passwords=self.passwords, throttles=self.throttles, revocations=self.revocations,
            outbox=outbox, forget_user=self._forget_user, two_factor=self.two_factor, audit=audit,
        )
        self.admin_servicer = AdminServicer(self.admin_service)
        self.auth_servicer = AuthServicer(self.auth_service, self.recovery, self.two_factor, self.deletion,
                                          trusted_proxies=settings.trusted_proxies)
        self.api_key_servicer = ApiKeyServicer(self.api_key_service)
        self.admin_ready = asyncio.Event()

    def _forget_user(self, user_id: str) -> None:
        self.auth_service.forget_profile(user_id)
        self.authenticator.forget_user(user_id)

    async def start(self, tasks: BackgroundTasks) -> None:
        await self.passwords.prepare()
        await self.revocations.start(tasks)
        self.authenticator.start(tasks)
        tasks.spawn("throttle-prune", self.throttles.prune_forever())
        if self._settings.admin_email and self._settings.admin_password:
            tasks.spawn("admin-bootstrap", self._bootstrap_admin())
        else:
            self.admin_ready.set()

    async def stop(self) -> None:
        """After the background tasks have stopped (the database is still open)."""
        await self.recovery.finish_pending()
        await self.authenticator.stop()
        await self.revocations.stop()
        self.passwords.close()

    async def _bootstrap_admin(self) -> None:
        assert self._settings.admin_email and self._settings.admin_password
        while True:
            try:
                await bootstrap_admin(self._sessions, self.passwords, self._settings.admin_email,
                                      self._settings.admin_password)
            except Exception as error:  # noqa: BLE001 - database not reachable yet
                log.warning("admin bootstrap failed; retrying", extra={"error": type(error).__name__})
                await asyncio.sleep(_ADMIN_RETRY_SECONDS)
            else:
                self.admin_ready.set()
                return
