"""Login and registration throttles against real servers (SQLite and PostgreSQL; two replicas on PostgreSQL).

The test client reaches the server over loopback, which is a trusted proxy by default
(THE0_TRUSTED_PROXIES), so it may name the address it speaks for in x-forwarded-for as
Envoy does: that is how one client plays an attacker on many addresses and the owner on
another. The forged-header tests make loopback untrusted instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections import Counter

import grpc
import pytest

from tests.fixtures.accounts import start_of_a_window
from tests.integration.test_identity_auth import (
    PASSWORD,
    auth,
    bearer,
    details,
    expect_error,
    me,
    register,
    retry_info,
)
from the0.auth.v1 import auth_service_pb2
from the0.server.identity.passwords import HASHING_THREADS

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
WRONG = "wrong password 123"


@pytest.fixture(autouse=True)
async def one_throttle_window() -> None:
    await start_of_a_window()


def from_address(address: str) -> tuple[tuple[str, str]]:
    return (("x-forwarded-for", address),)


async def outcome(call) -> str:
    """The answer's ErrorInfo reason ("OK" for success); RATE_LIMITED must carry a RetryInfo."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        reason = details(error)[0].reason
        if reason == "RATE_LIMITED":
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            delay = retry_info(error)
            assert delay is not None and delay.retry_delay.seconds >= 1
        return reason
    return "OK"


def register_from(channel, name: str, address: str):
    return auth(channel).Register(
        auth_service_pb2.RegisterRequest(email=f"{name}@example.com", password=PASSWORD, username=name),
        metadata=from_address(address))


def login(channel, email: str, password: str, address: str | None = None):
    return auth(channel).Login(auth_service_pb2.LoginRequest(email=email, password=password),
                               metadata=from_address(address) if address else None)


def count_verifications(stack) -> list[int]:
    """How many logins reached Argon2 (a verification of a real or the dummy hash)."""
    passwords = stack.app.identity.passwords
    seen = [0]
    original = passwords.verify

    async def counted(stored_hash: str, password: str):
        seen[0] += 1
        return await original(stored_hash, password)

    passwords.verify = counted
    return seen


async def test_parallel_wrong_passwords_from_one_address_reach_argon2_at_most_the_limit(stack_factory):
    stack = await stack_factory()  # 5 attempts per (account, address) per minute
    await register(stack.channel, "ada")
    reached = count_verifications(stack)
    answers = Counter(await asyncio.gather(*(outcome(login(stack.channel, "ada@example.com", WRONG))
                                             for _ in range(50))))
    assert answers == {"INVALID_CREDENTIALS": 5, "RATE_LIMITED": 45}
    assert reached[0] == 5


async def test_owner_still_logs_in_from_their_address_while_many_addresses_guess(stack_factory):
    # 40 per hour per account, so 10 per 5 minutes: the flood from 50 addresses stops at 10.
    stack = await stack_factory(login_attempts_per_account=40)
    await register_from(stack.channel, "ada", "198.51.100.7")
    reached = count_verifications(stack)
    answers = Counter(await asyncio.gather(*(
        outcome(login(stack.channel, "ada@example.com", WRONG, f"203.0.113.{i}")) for i in range(50))))
    assert answers == {"INVALID_CREDENTIALS": 10, "RATE_LIMITED": 40}
    assert reached[0] == 10
    # The owner's own address is not throttled, so the right password works there...
    tokens = await login(stack.channel, "ada@example.com", PASSWORD, "198.51.100.7")
    assert (await me(stack.channel, bearer(tokens.access_token))).username == "ada"
    # ...while the account-wide limit still holds for an address it never logged in from.
    await expect_error(login(stack.channel, "ada@example.com", PASSWORD, "192.0.2.200"),
                       grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_a_known_address_is_exempt_only_from_the_account_wide_limit(stack_factory):
    stack = await stack_factory(login_attempts_per_account=4)  # 1 per 5 minutes
    await register_from(stack.channel, "ada", "198.51.100.7")
    for address in ("203.0.113.1", "203.0.113.2"):
        await outcome(login(stack.channel, "ada@example.com", WRONG, address))
    # Its own (account, address) limit still applies to the owner's address: 5 per minute.
    answers = [await outcome(login(stack.channel, "ada@example.com", WRONG, "198.51.100.7")) for _ in range(6)]
    assert answers == ["INVALID_CREDENTIALS"] * 5 + ["RATE_LIMITED"]


@SQLITE_ONLY
async def test_forged_x_forwarded_for_from_an_untrusted_peer_does_not_bypass_the_address_limit(stack_factory):
    # Loopback is not a proxy here: the client is its own TCP address, whatever it claims.
    stack = await stack_factory(trusted_proxies=(ipaddress.ip_network("198.18.0.1/32"),))
    answers = Counter(await asyncio.gather(*(
        outcome(login(stack.channel, f"guess{i}@example.com", WRONG, f"203.0.113.{i}, 198.51.100.{i}"))
        for i in range(30))))
    assert answers == {"INVALID_CREDENTIALS": 20, "RATE_LIMITED": 10}  # 20 per address per minute


@SQLITE_ONLY
async def test_register_flood_is_throttled_per_address(stack_factory):
    stack = await stack_factory(registrations_per_address=3)
    answers = Counter(await asyncio.gather(*(
        outcome(register_from(stack.channel, f"flood{i}", "203.0.113.5")) for i in range(10))))
    assert answers == {"OK": 3, "RATE_LIMITED": 7}
    await register_from(stack.channel, "ada", "198.51.100.7")  # another address


@SQLITE_ONLY
async def test_a_full_hashing_queue_is_resource_exhausted_with_retry_info(stack_factory):
    stack = await stack_factory(password_hashing_queue=2)  # logins may wait 2, registrations 1
    passwords = stack.app.identity.passwords
    await register(stack.channel, "ada")
    gate, running = threading.Event(), [0]
    original = passwords._verify_sync

    def held(stored_hash: str, password: str):
        running[0] += 1
        gate.wait(10)
        return original(stored_hash, password)

    passwords._verify_sync = held
    try:
        pending = [asyncio.ensure_future(outcome(login(stack.channel, "ada@example.com", WRONG, f"203.0.113.{i}")))
                   for i in range(HASHING_THREADS + 2)]
        deadline = time.monotonic() + 5
        while (running[0], passwords.waiting) != (HASHING_THREADS, 2):
            assert time.monotonic() < deadline, (running, passwords.waiting)
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        assert await outcome(login(stack.channel, "ada@example.com", WRONG, "198.51.100.1")) == "RATE_LIMITED"
        assert await outcome(register(stack.channel, "bob")) == "RATE_LIMITED"
        assert time.perf_counter() - started < 1.0  # refused at once, not after a wait
    finally:
        gate.set()
    assert await asyncio.gather(*pending) == ["INVALID_CREDENTIALS"] * (HASHING_THREADS + 2)
    # The refused login was given back: that address still has its 5 attempts.
    answers = [await outcome(login(stack.channel, "ada@example.com", WRONG, "198.51.100.1")) for _ in range(5)]
    assert answers == ["INVALID_CREDENTIALS"] * 5


async def test_login_holds_no_database_connection_while_hashing(stack_factory):
    stack = await stack_factory()
    await register(stack.channel, "ada")
    await register(stack.channel, "bob")
    bob = await login(stack.channel, "bob@example.com", PASSWORD)
    passwords = stack.app.identity.passwords
    gate, hashing = asyncio.Event(), [0]
    original = passwords.verify

    async def held(stored_hash: str, password: str):
        hashing[0] += 1
        await gate.wait()
        return await original(stored_hash, password)

    passwords.verify = held
    logins = [asyncio.ensure_future(login(stack.channel, "ada@example.com", PASSWORD, f"203.0.113.{i}"))
              for i in range(10)]
    try:
        deadline = time.monotonic() + 5
        while hashing[0] < 10:
            assert time.monotonic() < deadline, hashing
            await asyncio.sleep(0.01)
        assert stack.app.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        stack.app.identity.auth_service._profiles.clear()  # a real read, not the profile cache
        started = time.perf_counter()
        assert (await me(stack.channel, bearer(bob.access_token))).username == "bob"
        assert time.perf_counter() - started < 1.0
    finally:
        gate.set()
    assert all(tokens.access_token for tokens in await asyncio.gather(*logins))


@POSTGRES_ONLY
async def test_the_limit_holds_across_two_replicas(stack_factory):
    first, second = await stack_factory(), await stack_factory()
    await register(first.channel, "ada")
    reached = [count_verifications(first), count_verifications(second)]
    answers = Counter(await asyncio.gather(*(
        outcome(login((first, second)[i % 2].channel, "ada@example.com", WRONG)) for i in range(50))))
    assert answers == {"INVALID_CREDENTIALS": 5, "RATE_LIMITED": 45}
    assert reached[0][0] + reached[1][0] == 5  # one count, whichever replica answered
