"""Passwords without a server: ``refuse_if_full`` answers as the bounded queue would."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from the0.server.errors import ResourceExhausted
from the0.server.identity.passwords import HASHING_THREADS, Passwords


async def test_refuse_if_full_refuses_exactly_what_the_queue_would():
    passwords = Passwords(memory_kib=1024, time_cost=1, max_waiting=4)  # logins may wait 4, new passwords 2
    stored = await passwords.hash("hunter22")
    gate, running = threading.Event(), [0]
    original = passwords._verify_sync

    def held(stored_hash: str, password: str):
        running[0] += 1
        gate.wait(10)
        return original(stored_hash, password)

    passwords._verify_sync = held
    pending: list[asyncio.Future] = []

    async def occupy(waiting: int) -> None:
        while len(pending) < HASHING_THREADS + waiting:
            pending.append(asyncio.ensure_future(passwords.verify(stored, "hunter22")))
        deadline = time.monotonic() + 5
        while (running[0], passwords.waiting) != (HASHING_THREADS, waiting):
            assert time.monotonic() < deadline, (running, passwords.waiting)
            await asyncio.sleep(0.01)

    try:
        passwords.refuse_if_full()
        passwords.refuse_if_full(new_password=True)
        await occupy(waiting=2)  # every thread busy, new passwords' half of the list full
        passwords.refuse_if_full()
        with pytest.raises(ResourceExhausted) as refused:
            passwords.refuse_if_full(new_password=True)
        assert refused.value.reason == "RATE_LIMITED"
        with pytest.raises(ResourceExhausted):
            await passwords.hash("hunter22")  # the queue agrees
        await occupy(waiting=4)
        with pytest.raises(ResourceExhausted) as refused:
            passwords.refuse_if_full()
        assert refused.value.reason == "RATE_LIMITED"
        with pytest.raises(ResourceExhausted):
            await passwords.verify(stored, "hunter22")
    finally:
        gate.set()
    assert all(v.ok for v in await asyncio.gather(*pending))
    passwords.refuse_if_full()
    passwords.close()
