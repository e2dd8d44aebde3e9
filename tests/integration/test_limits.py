"""The limit mechanisms on their own (token bucket, slots, spool budget) and the gRPC server's
own limits as the running server applies them: concurrent RPCs, connection age, ping policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.fixtures.accounts import new_account
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.custom_bot.v1 import custom_bot_service_pb2_grpc
from the0.server.app import connection_options
from the0.server.custom_bots.service import SpoolBudget
from the0.server.errors import ResourceExhausted
from the0.server.identity.principal import Principal, principal_var
from the0.server.interceptors.rate_limit import caller_key, request_costs
from the0.server.limits import RateLimiter, RatePolicy, Slots, SlotsFull
from the0.server.settings import Settings, SettingsError

MISSING_ID = "00000000-0000-4000-8000-000000000000"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the mechanisms --------------------------------------------------------------------------------


def test_token_bucket_bursts_then_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(RatePolicy(rate=10.0, burst=5), clock=clock)
    assert [limiter.take("a").allowed for _ in range(6)] == [True] * 5 + [False]
    refused = limiter.take("a")
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after == pytest.approx(0.1)
    assert limiter.take("b").allowed  # another caller, another bucket
    clock.now += 0.25  # 2.5 tokens
    assert [limiter.take("a").allowed for _ in range(3)] == [True, True, False]
    # A write costing 3 waits for 3 tokens; more than the burst is capped at a full bucket.
    clock.now += 10
    assert limiter.take("a", 3).remaining == 2
    assert not limiter.take("a", 3).allowed
    clock.now += 10
    assert limiter.take("a", 50).allowed
    assert RatePolicy(rate=20.0, burst=100).window_seconds == 5


def test_token_buckets_are_bounded_in_memory() -> None:
    limiter = RateLimiter(RatePolicy(rate=1.0, burst=1), clock=Clock(), max_callers=10)
    for i in range(1000):
        limiter.take(f"ip:{i}")
    assert len(limiter._buckets) == 10


def test_slots_count_per_key_and_forget_released_keys() -> None:
    slots = Slots(2)
    slots.acquire("a")
    slots.acquire("a")
    with pytest.raises(SlotsFull):
        slots.acquire("a")
    slots.acquire("b")
    slots.release("a")
    slots.acquire("a")
    for key in ("a", "a", "b"):
        slots.release(key)
    assert slots._held == {}


def test_spool_budget_refuses_past_its_limit_with_retry_info() -> None:
    budget = SpoolBudget(1000)
    budget.take(600)
    with pytest.raises(ResourceExhausted) as refused:
        budget.take(401)
    assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
    assert refused.value.retry_after is not None
    budget.give_back(600)
    budget.take(1000)


def test_limits_come_from_the_environment_with_clear_problems() -> None:
    env = {"JWT_SECRET": "x" * 40, "THE0_RATE_LIMIT_PER_SECOND": "2.5", "THE0_RATE_LIMIT_BURST": "30",
           "THE0_MAX_STREAMS_PER_CALLER": "7", "THE0_UPLOAD_IDLE_TIMEOUT": "2m",
           "THE0_MAX_UPLOAD_SPOOL_BYTES": "1048576", "THE0_MAX_BOTS_PER_USER": "3",
           "THE0_MAX_CONNECTION_AGE": "1h", "THE0_MAX_CONCURRENT_RPCS": "100"}
    settings = Settings.from_env(env, dev_mode=True)
    assert (settings.rate_limit_per_second, settings.rate_limit_burst, settings.max_streams_per_caller) == (
        2.5, 30, 7)
    assert (settings.upload_idle_timeout_seconds, settings.max_upload_spool_bytes) == (120.0, 1048576)
    assert (settings.max_bots_per_user, settings.max_connection_age_seconds, settings.max_concurrent_rpcs) == (
        3, 3600.0, 100)
    bad = {"JWT_SECRET": "x" * 40, "THE0_RATE_LIMIT_PER_SECOND": "nan", "THE0_MAX_UPLOADS_PER_CALLER": "0",
           "THE0_UPLOAD_IDLE_TIMEOUT": "soon", "THE0_KEEPALIVE_TIME": "1s"}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(bad, dev_mode=True)
    named = " ".join(raised.value.problems)
    for name in ("THE0_RATE_LIMIT_PER_SECOND", "THE0_MAX_UPLOADS_PER_CALLER", "THE0_UPLOAD_IDLE_TIMEOUT",
                 "THE0_KEEPALIVE_TIME"):
        assert name in named


def test_callers_are_users_or_addresses_and_an_ipv6_host_is_its_slash_64() -> None:
    context: Any = object()
    assert caller_key(context, lambda _: "198.51.100.7") == "ip:198.51.100.7"
    assert caller_key(context, lambda _: "2001:db8::1") == caller_key(context, lambda _: "2001:db8::ffff:1")
    assert caller_key(context, lambda _: "2001:db8::1") == "net:2001:db8::/64"
    token = principal_var.set(Principal(user_id="u1", role="user", auth_kind="api_key"))
    try:
        assert caller_key(context, lambda _: "198.51.100.7") == "user:u1"
    finally:
        principal_var.reset(token)


def test_reads_cost_one_token_and_writes_more() -> None:
    costs = request_costs([bot_service_pb2.DESCRIPTOR.services_by_name["BotService"]], write_cost=5)
    assert costs["/the0.bot.v1.BotService/GetBot"] == costs["/the0.bot.v1.BotService/WatchBot"] == 1
    assert costs["/the0.bot.v1.BotService/CreateBot"] == costs["/the0.bot.v1.BotService/DeleteBot"] == 5


def test_connection_options_follow_the_settings() -> None:
    options = dict(connection_options(Settings(keepalive_time_seconds=30, max_connection_age_seconds=600,
                                               max_connection_age_grace_seconds=60)))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert options["grpc.max_connection_age_grace_ms"] == 60_000


# -- the running server ----------------------------------------------------------------------------


async def never() -> AsyncIterator[Any]:
    """An upload's requests that never come: the call stays open until the server ends it."""
    await asyncio.Event().wait()
    yield  # pragma: no cover - never reached


def held_upload(channel: grpc.aio.Channel, token: str) -> Any:
    stub = custom_bot_service_pb2_grpc.CustomBotServiceStub(channel)
    return stub.UploadCustomBot(never(), metadata=(("authorization", f"Bearer {token}"),))


async def test_maximum_concurrent_rpcs_is_applied(stack_factory: Any) -> None:
    stack = await stack_factory(max_concurrent_rpcs=3)
    _, token = await new_account(stack.channel)
    stub = bot_service_pb2_grpc.BotServiceStub(stack.channel)
    metadata = (("authorization", f"Bearer {token}"),)
    # Three calls the server holds open (uploads that never send), then a fourth.
    held = [held_upload(stack.channel, token) for _ in range(3)]
    await asyncio.sleep(0.5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListBots(bot_service_pb2.ListBotsRequest(), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for call in held:
        call.cancel()
    await asyncio.sleep(0.3)
    assert (await stub.ListBots(bot_service_pb2.ListBotsRequest(), metadata=metadata)).bots == []


async def test_connections_are_closed_at_their_maximum_age(stack_factory: Any) -> None:
    stack = await stack_factory(max_connection_age_seconds=1.0, max_connection_age_grace_seconds=1.0)
    _, token = await new_account(stack.channel)
    call = held_upload(stack.channel, token)
    # Age (1 s, ±10 % jitter) then the grace (1 s): the held call is ended by the server.
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call, timeout=6)
    assert ended.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    # The channel reconnects by itself.
    stub = bot_service_pb2_grpc.BotServiceStub(stack.channel)
    listed = await stub.ListBots(bot_service_pb2.ListBotsRequest(),
                                 metadata=(("authorization", f"Bearer {token}"),))
    assert listed.bots == []


async def test_clients_that_ping_too_often_are_sent_away(stack_factory: Any) -> None:
    stack = await stack_factory()
    _, token = await new_account(stack.channel)
    pinger = grpc.aio.insecure_channel(stack.grpc_target, options=[
        ("grpc.keepalive_time_ms", 500), ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ])
    try:
        call = held_upload(pinger, token)
        # Pings every 0.5 s against a 10 s minimum: after the strikes the server sends GOAWAY.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call, timeout=8)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await pinger.close()
