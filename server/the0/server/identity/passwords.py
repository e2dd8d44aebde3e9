"""Password hashing: Argon2id, always in a worker thread (it is slow on purpose).

Every hash and verification takes a slot of one bounded queue: ``HASHING_THREADS`` run,
at most ``max_waiting`` wait, and the next is refused at once with RESOURCE_EXHAUSTED
(``RATE_LIMITED``, RetryInfo) instead of queueing without end (each waiting request
holds its memory and its client's deadline). Registrations may fill only half the wait
list, so a register flood cannot queue every login behind it. ``refuse_if_full`` lets
Register and Login refuse before their database work (most of a flood is refused).

argon2-cffi releases the GIL while it hashes: the thread takes it only to start and to
hand back the result. A hashing *process* instead of the thread was measured (issue 11,
login storm): it did not lower the p99 of other RPCs, because what a hash costs them on a
two-core machine is the core it takes (an unrelated process spinning at the
same duty cycle, even at SCHED_IDLE, costs as much), not the GIL or this address space.

Hashes imported from the original platform are bcrypt (``$2a$``/``$2b$``/``$2y$``);
they verify with the ``bcrypt`` package and ``needs_rehash`` says to replace
them with Argon2id on that login, as for Argon2 hashes with outdated parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from the0.server.errors import ResourceExhausted

# OWASP Password Storage Cheat Sheet, Argon2id: m=19 MiB, t=2, p=1 (minimum).
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# At most this many hashes at once (each takes 19 MiB and a core for ~50 ms): half the
# cores, so a login storm never takes the CPU the event loop needs...
HASHING_THREADS = max(1, (os.cpu_count() or 2) // 2)
# ...in threads the OS schedules after the event loop's: under CPU pressure a login
# waits a little longer rather than every other request.
HASHING_NICENESS = 10
DEFAULT_MAX_WAITING = 32
# The wait list drains in well under a second at OWASP cost (~50 ms a hash): retry soon.
BUSY_RETRY = timedelta(seconds=1)
T = TypeVar("T")


def _lower_thread_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # Linux: a thread id is a schedulable entity
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    needs_rehash: bool = False


class Passwords:
    def __init__(
        self,
        *,
        memory_kib: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
        max_waiting: int = DEFAULT_MAX_WAITING,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._dummy_hash: str | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=HASHING_THREADS, thread_name_prefix="password-hashing", initializer=_lower_thread_priority
        )
        self._slots = asyncio.Semaphore(HASHING_THREADS)
        self._max_waiting = max_waiting
        self.waiting = 0

    async def _off_loop(self, work: Callable[..., T], *args: object, may_wait: int | None = None) -> T:
        # Never on the event loop: a dedicated, low-priority pool (asyncio.to_thread's
        # shared default pool would let hashing crowd out other blocking work).
        self._refuse_if_full(self._max_waiting if may_wait is None else may_wait)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        except BaseException:
            self._slots.release()
            raise
        # The slot is free when the thread is, not when the caller stops waiting (a cancelled
        # request cannot make more hashes run at once than there are threads).
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(future)

    def refuse_if_full(self, *, new_password: bool = False) -> None:
        """Raise now what ``hash`` (``new_password``) or ``verify`` would raise if called now,
        so a request the queue would turn away is refused before its database work."""
        self._refuse_if_full(self._max_waiting // 2 if new_password else self._max_waiting)

    def _refuse_if_full(self, may_wait: int) -> None:
        if self._slots.locked() and self.waiting >= may_wait:
            raise ResourceExhausted("the server is busy hashing passwords; retry shortly", reason="RATE_LIMITED",
                                    retry_after=BUSY_RETRY, metadata={"retryAfterSeconds": "1"})

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        """For a new password (registration, rehash): may use half the wait list."""
        return await self._off_loop(self._hasher.hash, password, may_wait=self._max_waiting // 2)

    async def verify(self, stored_hash: str, password: str) -> Verification:
        return await self._off_loop(self._verify_sync, stored_hash, password)

    async def verify_nobody(self, password: str) -> Verification:
        """Spend the time of a real verification, for an unknown email (no timing oracle)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy_hash, password)
        return Verification(ok=False)

    async def prepare(self) -> None:
        """Compute the dummy hash once at start, not on the first unknown-email login."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    def _verify_sync(self, stored_hash: str, password: str) -> Verification:
        if stored_hash.startswith(_BCRYPT_PREFIXES):
            try:
                ok = bcrypt.checkpw(password.encode()[:72], stored_hash.encode())
            except ValueError:
                return Verification(ok=False)
            return Verification(ok=ok, needs_rehash=ok)
        try:
            self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return Verification(ok=False)
        return Verification(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored_hash))
