"""Login and registration throttles, shared by every replica (``db/counters.py``).

An attempt is *reserved* before anything slow runs: the counters are incremented in one
short transaction and, if any limit is exceeded, rolled back and refused. So N parallel
guesses can never all pass a check made before the first of them is recorded, and a
refused attempt costs one round trip and no Argon2. A successful login gives its
reservation back (only failures accumulate); so does an attempt the hashing queue
turned away.

Login limits (fixed windows; OWASP Authentication Cheat Sheet, NIST SP 800-63B 5.2.2):

- per (account, address), per minute: guessing one account from one address;
- per account, per 5 minutes and per hour (at most 100, NIST): guessing one account from
  many addresses. An address this account has logged in (or registered) from within
  ``KNOWN_ADDRESS_DAYS`` is exempt, so a flood against the account from elsewhere does
  not lock its owner out;
- per address, per minute and per hour: one address guessing many accounts.

The short window of each pair stops a burst, the long one a patient attacker, so the
delays grow from at most a minute to at most an hour. Registrations: per address, per hour.
Keys are SHA-256 digests: the table never holds an email or an address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.db import counters
from the0.server.errors import ResourceExhausted

log = logging.getLogger("the0.identity")
KNOWN_ADDRESS_DAYS = 30
PRUNE_EVERY_SECONDS = 60.0
MINUTE, FIVE_MINUTES, HOUR = 60, 300, 3600


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # which counter: "login.pair", "login.account", ...
    attempts: int  # allowed per window
    window_seconds: int
    exempt_if_known: bool = False  # not applied to an address the account has used


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    login_per_account_address: int = 5
    login_per_account: int = 100
    login_per_address: int = 20
    registrations_per_address: int = 10
    recovery_per_address: int = 10  # password-reset and email-verification requests
    reset_mails_per_email: int = 10  # password-reset mails to one email address, whoever asks
    reset_mails_per_email_address: int = 3  # ... asked for from one address

    def login(self) -> tuple[Limit, ...]:
        return (
            Limit("login.pair", self.login_per_account_address, MINUTE),
            Limit("login.account", max(1, self.login_per_account // 4), FIVE_MINUTES, exempt_if_known=True),
            Limit("login.account.hour", self.login_per_account, HOUR, exempt_if_known=True),
            Limit("login.address", self.login_per_address, MINUTE),
            Limit("login.address.hour", self.login_per_address * 10, HOUR),
        )

    def registration(self) -> tuple[Limit, ...]:
        return (Limit("register.address", self.registrations_per_address, HOUR),)

    def recovery(self) -> tuple[Limit, ...]:
        return (Limit("recover.address", self.recovery_per_address, HOUR),)

    def reset_mail(self) -> tuple[Limit, ...]:
        return (Limit("reset-mail.pair", self.reset_mails_per_email_address, HOUR),
                Limit("reset-mail.email", self.reset_mails_per_email, HOUR))


@dataclass(frozen=True, slots=True)
class Reservation:
    """The counter keys one attempt incremented (given back by ``refund``)."""

    keys: tuple[str, ...]
    email: str = ""
    address: str = ""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


class Throttles:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        limits: ThrottleLimits,
        clock: Callable[[], float] = time.time,  # wall clock: windows must agree across replicas
    ) -> None:
        self._sessions = sessions
        self._limits = limits
        self._clock = clock

    async def reserve_login(self, email: str, address: str) -> Reservation:
        subjects = {"login.pair": (email, address), "login.account": (email,), "login.account.hour": (email,),
                    "login.address": (address,), "login.address.hour": (address,)}
        return await self._reserve(self._limits.login(), subjects, email=email, address=address)

    async def reserve_second_factor(self, email: str, address: str) -> Reservation:
        """A code at CompleteLogin: the login limits, but with no known-address exemption,
        because knowing the password says nothing about owning the authenticator."""
        subjects = {"login.pair": (email, address), "login.account": (email,), "login.account.hour": (email,),
                    "login.address": (address,), "login.address.hour": (address,)}
        return await self._reserve(self._limits.login(), subjects, email=email, address=address, honour_known=False)

    async def reserve_registration(self, address: str) -> Reservation:
        return await self._reserve(self._limits.registration(), {"register.address": (address,)}, address=address)

    async def reserve_recovery(self, address: str) -> Reservation:
        """A password-reset or verification request: mail is not free, nor is guessing emails."""
        return await self._reserve(self._limits.recovery(), {"recover.address": (address,)}, address=address)

    async def reset_mail_allowed(self, email: str, address: str) -> bool:
        """Whether a reset mail may go to ``email``, asked for from ``address``, now (counted whether
        or not it has an account). Per pair first: one address alone cannot use up the owner's."""
        subjects = {"reset-mail.pair": (email, address), "reset-mail.email": (email,)}
        try:
            await self._reserve(self._limits.reset_mail(), subjects, email=email, address=address)
        except ResourceExhausted:
            return False
        return True

    async def refund(self, reservation: Reservation) -> None:
        async with self._sessions() as db:
            await counters.decrement(db, reservation.keys)
            await db.commit()

    async def succeeded(self, reservation: Reservation) -> None:
        """A login or registration proved the password from this address: only failures
        count, and this address is exempt from the account-wide limits for a while."""
        async with self._sessions() as db:
            await counters.decrement(db, reservation.keys)
            expires = int(self._clock()) + KNOWN_ADDRESS_DAYS * 86400
            await counters.mark(db, self._known_key(reservation.email, reservation.address), expires)
            await db.commit()

    async def remember_address(self, email: str, address: str) -> None:
        async with self._sessions() as db:
            expires = int(self._clock()) + KNOWN_ADDRESS_DAYS * 86400
            await counters.mark(db, self._known_key(email, address), expires)
            await db.commit()

    async def prune_forever(self) -> None:
        """Background task: delete expired counters, so the table stays the size of the last hour."""
        while True:
            await asyncio.sleep(PRUNE_EVERY_SECONDS)
            try:
                async with self._sessions() as db:
                    removed = await counters.prune(db, int(self._clock()))
                    await db.commit()
            except Exception as error:  # noqa: BLE001 - the database may be down; try again later
                log.warning("pruning throttle counters failed", extra={"error": type(error).__name__})
            else:
                log.debug("throttle counters pruned", extra={"removed": removed})

    async def _reserve(self, limits: tuple[Limit, ...], subjects: dict[str, tuple[str, ...]], *, email: str = "",
                       address: str = "", honour_known: bool = True) -> Reservation:
        now = self._clock()
        windows: dict[str, tuple[Limit, float]] = {}  # key -> (limit, end of its window)
        for limit in limits:
            index = int(now // limit.window_seconds)
            key = f"{limit.scope}:{index}:{_digest(*subjects[limit.scope])}"
            windows[key] = (limit, float((index + 1) * limit.window_seconds))
        async with self._sessions() as db:
            hits = await counters.increment(db, [(key, int(end)) for key, (_, end) in windows.items()])
            exceeded = [(limit, end) for key, (limit, end) in windows.items() if hits[key] > limit.attempts]
            if honour_known and any(limit.exempt_if_known for limit, _ in exceeded) and await counters.is_marked(
                db, self._known_key(email, address), int(now)
            ):
                exceeded = [(limit, end) for limit, end in exceeded if not limit.exempt_if_known]
            if exceeded:
                await db.rollback()  # a refused attempt is not counted: it cost nothing
                wait = max(1, math.ceil(max(end for _, end in exceeded) - now))
                raise ResourceExhausted(
                    f"too many attempts; retry in {wait} s", reason="RATE_LIMITED",
                    retry_after=timedelta(seconds=wait), metadata={"retryAfterSeconds": str(wait)},
                )
            await db.commit()
        return Reservation(tuple(windows), email, address)

    @staticmethod
    def _known_key(email: str, address: str) -> str:
        return f"login.known:{_digest(email, address)}"
