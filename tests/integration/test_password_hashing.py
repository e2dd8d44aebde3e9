"""Logins and registrations under load (issue 11): what each costs the server beside its hash.

Argon2 runs at the cheap test cost (tests/fixtures/server.py FAST_ARGON2).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from tests.integration.test_identity_auth import PASSWORD, auth, bearer, me, register
from tests.integration.test_throttles import login, outcome, register_from
from the0.auth.v1 import auth_service_pb2
from the0.server.identity.passwords import HASHING_THREADS

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
async def test_a_login_leaves_the_committed_profile_in_the_cache(stack_factory):
    # A login storm on an account must not turn its GetCurrentUser into database reads.
    stack = await stack_factory()
    await register(stack.channel, "ada")
    tokens = await auth(stack.channel).Login(auth_service_pb2.LoginRequest(email="ada@example.com",
                                                                           password=PASSWORD))
    service = stack.app.identity.auth_service
    assert tokens.user.id in service._profiles
    cached = await me(stack.channel, bearer(tokens.access_token))
    service._profiles.clear()
    read = await me(stack.channel, bearer(tokens.access_token))
    assert cached == read  # the same as a database read, update time included
    assert read.last_login_time == tokens.user.last_login_time


@SQLITE_ONLY
async def test_a_full_queue_refuses_at_once_before_any_database_work(stack_factory):
    # A register flood is mostly refused: each refusal must cost no transaction (no throttle
    # reservation to make and give back, no lookup), only the answer.
    stack = await stack_factory(password_hashing_queue=2)  # logins may wait 2, registrations 1
    await register(stack.channel, "ada")
    passwords, throttles = stack.app.identity.passwords, stack.app.identity.throttles
    reserved = Counter()

    def counting(name: str):
        original = getattr(throttles, name)

        def counted(*args, **kwargs):
            reserved[name] += 1
            return original(*args, **kwargs)
        return counted

    for name in ("reserve_login", "reserve_registration"):
        setattr(throttles, name, counting(name))
    gate, running = threading.Event(), [0]
    original = passwords._verify_sync

    def held(stored_hash: str, password: str):
        running[0] += 1
        gate.wait(10)
        return original(stored_hash, password)

    passwords._verify_sync = held
    try:
        pending = [asyncio.ensure_future(outcome(login(stack.channel, "ada@example.com", PASSWORD, f"203.0.113.{i}")))
                   for i in range(HASHING_THREADS + 2)]
        deadline = time.monotonic() + 5
        while (running[0], passwords.waiting) != (HASHING_THREADS, 2):
            assert time.monotonic() < deadline, (running, passwords.waiting)
            await asyncio.sleep(0.01)
        assert reserved == {"reserve_login": HASHING_THREADS + 2}
        started = time.perf_counter()
        assert await outcome(login(stack.channel, "ada@example.com", PASSWORD, "198.51.100.1")) == "RATE_LIMITED"
        assert await outcome(register_from(stack.channel, "bob", "198.51.100.2")) == "RATE_LIMITED"
        assert await outcome(register_from(stack.channel, "ada", "198.51.100.3")) == "RATE_LIMITED"  # taken, too
        assert time.perf_counter() - started < 1.0
        assert reserved == {"reserve_login": HASHING_THREADS + 2}  # the refused ones reserved nothing
    finally:
        gate.set()
    assert await asyncio.gather(*pending) == ["OK"] * (HASHING_THREADS + 2)
    assert await outcome(register_from(stack.channel, "bob", "198.51.100.2")) == "OK"
