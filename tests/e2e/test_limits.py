"""Every caller has limits (docs/limits.md): request rate, streams, uploads, quotas.

Real server replicas behind real Envoy, on SQLite and PostgreSQL; each test sets small
limits of its own (the other suites run with relaxed ones, tests/fixtures/server.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.accounts import new_account
from tests.integration.test_backtests_support import add_backtestable_bot, backtest_config
from tests.integration.test_bots_support import add_custom_bot, bot_config
from tests.unit.test_archive_checks import bot_zip
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.custom_bot.v1 import custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc
from the0.server.db.engine import create_engine, session_factory

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MISSING_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Any]:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


class User:
    def __init__(self, user_id: str, token: str, channel: grpc.aio.Channel) -> None:
        self.id = user_id
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.headers = {"authorization": f"Bearer {token}"}
        self.bots = bot_service_pb2_grpc.BotServiceStub(channel)
        self.backtests = backtest_service_pb2_grpc.BacktestServiceStub(channel)
        self.custom_bots = custom_bot_service_pb2_grpc.CustomBotServiceStub(channel)


async def register(channel: grpc.aio.Channel) -> User:
    return User(*await new_account(channel), channel)


def details(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str], float | None]:
    """(code, ErrorInfo.reason, ErrorInfo.metadata, RetryInfo seconds or None)."""
    status = rpc_status.from_call(error)
    assert status is not None, error
    reason, metadata, retry = "", {}, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            retry = retry_info.retry_delay.ToTimedelta().total_seconds()
    return error.code(), reason, metadata, retry


async def outcome(awaitable: Any) -> Any:
    try:
        return await awaitable
    except grpc.aio.AioRpcError as error:
        return error


def rest_reason(response: httpx.Response) -> str:
    (info,) = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")]
    return str(info["reason"])


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def create_bot_request(name: str = "my bot") -> bot_service_pb2.CreateBotRequest:
    return bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name=name, config=struct(bot_config())))


# -- request rate -----------------------------------------------------------------------------------


async def test_a_get_bot_burst_is_rate_limited_over_grpc_with_retry_info(stack_factory: Any) -> None:
    # 1/s, not more: a loaded machine answering one call per 200 ms would refill a 5/s bucket as fast as
    # it is drained, and nothing would be limited.
    stack = await stack_factory(rate_limit_per_second=1.0, rate_limit_burst=20)
    alice, bob = await register(stack.channel), await register(stack.channel)
    request = bot_service_pb2.GetBotRequest(id=MISSING_ID)
    started = time.monotonic()
    results = [await outcome(alice.bots.GetBot(request, metadata=alice.metadata)) for _ in range(60)]
    elapsed = time.monotonic() - started
    codes = [r.code() for r in results]
    # The burst passes (each answered NOT_FOUND), then the bucket refills at 1/s only: of the other 40
    # calls, at most the tokens refilled while they ran pass.
    assert codes[:20] == [grpc.StatusCode.NOT_FOUND] * 20
    limited = [r for r in results if r.code() == RESOURCE_EXHAUSTED]
    assert len(limited) >= max(40 - int(elapsed) - 1, 10), (elapsed, codes)
    code, reason, metadata, retry = details(limited[0])
    assert (code, reason, metadata["limit"]) == (RESOURCE_EXHAUSTED, "RATE_LIMITED", "20")
    assert retry is not None and 0 < retry <= 1.0 + 1e-6  # one token at 1/s
    trailers = dict(limited[0].trailing_metadata() or ())
    assert trailers["retry-after"] == "1"
    assert trailers["ratelimit-policy"] == '"requests";q=20;w=20'
    assert trailers["ratelimit"].startswith('"requests";r=0;t=')
    # Per caller: bob's bucket is his own.
    answer = await outcome(bob.bots.GetBot(request, metadata=bob.metadata))
    assert answer.code() == grpc.StatusCode.NOT_FOUND
    # And it refills: after a second alice has a token again.
    await asyncio.sleep(1.1)
    answer = await outcome(alice.bots.GetBot(request, metadata=alice.metadata))
    assert answer.code() == grpc.StatusCode.NOT_FOUND


async def test_writes_cost_more_than_reads(stack_factory: Any, sessions: Any) -> None:
    stack = await stack_factory(rate_limit_per_second=0.5, rate_limit_burst=20, rate_limit_write_cost=5)
    alice = await register(stack.channel)
    await add_custom_bot(sessions, alice.id, name="my-bot")
    results = [await outcome(alice.bots.CreateBot(create_bot_request(f"b{i}"), metadata=alice.metadata))
               for i in range(6)]
    created = [r for r in results if isinstance(r, bot_pb2.Bot)]
    assert len(created) == 4, results  # 20 tokens / 5 per write
    code, reason, _, _ = details(results[4])
    assert (code, reason) == (RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_a_burst_over_rest_is_429_with_retry_after_and_ratelimit_headers(stack_factory: Any) -> None:
    stack = await stack_factory(envoy=True, rate_limit_per_second=2.0, rate_limit_burst=10)
    alice = await register(stack.channel)
    async with httpx.AsyncClient(base_url=stack.http_url, headers=alice.headers, timeout=10) as http:
        responses = [await http.get(f"/api/bots/{MISSING_ID}") for _ in range(30)]
    statuses = [r.status_code for r in responses]
    assert statuses[:10] == [404] * 10, statuses
    assert statuses.count(429) >= 18, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert rest_reason(limited) == "RATE_LIMITED"
    assert any(d["@type"].endswith("RetryInfo") for d in limited.json()["details"])
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["ratelimit-policy"] == '"requests";q=10;w=5'
    assert limited.headers["ratelimit"].startswith('"requests";r=0;t=')
    assert limited.headers["x-request-id"]
    assert limited.headers["content-type"].startswith("application/json")


async def test_anonymous_callers_are_limited_by_address(stack_factory: Any) -> None:
    stack = await stack_factory(envoy=True, rate_limit_per_second=1.0, rate_limit_burst=5)
    health = health_service_pb2_grpc.HealthServiceStub(stack.channel)
    results = [await outcome(health.GetHealth(health_service_pb2.GetHealthRequest())) for _ in range(8)]
    limited = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(limited) == 3, results
    assert details(limited[0])[:2] == (RESOURCE_EXHAUSTED, "RATE_LIMITED")
    # Through Envoy the caller is the address Envoy saw (not Envoy's own, which would put
    # every REST client in one bucket), and a forged x-forwarded-for does not buy a new one.
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http:
        forged = [await http.get("/health", headers={"x-forwarded-for": f"203.0.113.{i}"}) for i in range(8)]
    assert [r.status_code for r in forged] == [200] * 5 + [429] * 3
    assert rest_reason(forged[-1]) == "RATE_LIMITED"
    # gRPC's own health service (Envoy's probe) is never limited.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    probe = health_pb2_grpc.HealthStub(stack.channel)
    for _ in range(20):
        assert (await probe.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING


# -- streams ---------------------------------------------------------------------------------------


async def first_message(call: Any) -> Any:
    try:
        return await call.read()
    except grpc.aio.AioRpcError as error:
        return error


async def test_2000_watch_attempts_hold_at_the_cap_and_the_rest_are_refused(
    stack_factory: Any, sessions: Any
) -> None:
    stack = await stack_factory(envoy=True, max_streams_per_caller=25, watch_heartbeat_seconds=0.5)
    alice, bob = await register(stack.channel), await register(stack.channel)
    await add_custom_bot(sessions, alice.id, name="my-bot")
    bot = await alice.bots.CreateBot(create_bot_request(), metadata=alice.metadata)
    request = bot_service_pb2.WatchBotRequest(id=bot.id)
    # In waves of 200: 2,000 streams opened at the same instant on one connection trip
    # gRPC's own HTTP/2 flood protection (GOAWAY, every call CANCELLED), before our cap.
    calls: list[Any] = []
    firsts: list[Any] = []
    for _ in range(10):
        wave = [alice.bots.WatchBot(request, metadata=alice.metadata) for _ in range(200)]
        calls += wave
        firsts += await asyncio.gather(*(first_message(call) for call in wave))
    watching = [m for m in firsts if isinstance(m, bot_service_pb2.WatchBotResponse)]
    refused = [m for m in firsts if isinstance(m, grpc.aio.AioRpcError)]
    assert (len(watching), len(refused)) == (25, 1975)
    assert {(details(e)[0], details(e)[1], details(e)[2]["limit"]) for e in refused} == {
        (RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS", "25")
    }
    assert stack.app.rate_limit.streams.held(f"user:{alice.id}") == 25
    # The cap is alice's: bob watches his own (missing) bot and gets the usual NOT_FOUND.
    answer = await first_message(bob.bots.WatchBot(bot_service_pb2.WatchBotRequest(id=MISSING_ID),
                                                   metadata=bob.metadata))
    assert details(answer)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    # Over REST too: the 26th watch is 429.
    async with httpx.AsyncClient(base_url=stack.http_url, headers=alice.headers, timeout=10) as http:
        response = await http.get(f"/api/bots/{bot.id}/watch")
        assert (response.status_code, rest_reason(response)) == (429, "TOO_MANY_STREAMS")
    # Ending streams frees their slots, whoever ends them.
    for call in calls:
        call.cancel()
    async with asyncio.timeout(10):
        while stack.app.rate_limit.streams.held(f"user:{alice.id}"):
            await asyncio.sleep(0.05)
    again = alice.bots.WatchBot(request, metadata=alice.metadata)
    assert isinstance(await first_message(again), bot_service_pb2.WatchBotResponse)
    again.cancel()


# -- uploads ---------------------------------------------------------------------------------------


async def stalled_upload(user: User, first: bytes = b"P") -> Any:
    """Sends ``first`` and then nothing, never closing its side."""

    async def requests() -> AsyncIterator[custom_bot_service_pb2.UploadCustomBotRequest]:
        yield custom_bot_service_pb2.UploadCustomBotRequest(chunk={"content_type": "application/zip",
                                                                   "data": first})
        await asyncio.Event().wait()

    return await outcome(user.custom_bots.UploadCustomBot(requests(), metadata=user.metadata))


def spool_files(stack: Any) -> list[Path]:
    folder = stack.app.settings.data_dir / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


async def test_300_stalled_uploads_hold_at_most_the_cap_and_are_dropped_when_idle(stack_factory: Any) -> None:
    # 3 s idle: all 300 must arrive while the first three hold their slots (else a freed slot takes a 4th).
    stack = await stack_factory(max_uploads_per_caller=3, upload_idle_timeout_seconds=3.0)
    alice = await register(stack.channel)
    held = functools.partial(stack.app.rate_limit.uploads.held, f"user:{alice.id}")
    most_held = most_spooled = 0
    started = time.monotonic()
    tasks = [asyncio.ensure_future(stalled_upload(alice)) for _ in range(300)]
    all_ended = asyncio.ensure_future(asyncio.wait_for(asyncio.gather(*tasks), timeout=30))
    # Sampled while they run, not after a fixed sleep: on a loaded machine 300 streams take a
    # while to arrive, and the idle timeout may already have dropped the first three.
    while not all_ended.done():
        most_held, most_spooled = max(most_held, held()), max(most_spooled, len(spool_files(stack)))
        await asyncio.sleep(0.01)
    results = all_ended.result()
    elapsed = time.monotonic() - started
    assert most_held == 3
    assert most_spooled <= 3
    outcomes = [details(r)[:2] for r in results]
    assert outcomes.count((grpc.StatusCode.DEADLINE_EXCEEDED, "UPLOAD_IDLE")) == 3
    assert outcomes.count((RESOURCE_EXHAUSTED, "TOO_MANY_UPLOADS")) == 297
    assert elapsed < 15, elapsed  # the idle ones were dropped after about 3 s, not at some later sweep
    assert details(next(r for r in results if details(r)[1] == "UPLOAD_IDLE"))[2] == {"idleSeconds": "3"}
    assert spool_files(stack) == []
    assert held() == 0
    # The slots are free again: a real upload goes through.
    requests = iter([custom_bot_service_pb2.UploadCustomBotRequest(
        chunk={"content_type": "application/zip", "data": bot_zip()})])
    uploaded = await alice.custom_bots.UploadCustomBot(requests, metadata=alice.metadata)
    assert uploaded.version == "1.0.0"


async def test_the_server_wide_spool_budget_refuses_uploads_with_retry_info(stack_factory: Any) -> None:
    stack = await stack_factory(max_upload_spool_bytes=1024 * 1024, upload_idle_timeout_seconds=2.0)
    alice, bob = await register(stack.channel), await register(stack.channel)
    holding = asyncio.ensure_future(stalled_upload(alice, b"x" * (700 * 1024)))
    async with asyncio.timeout(5):
        while stack.app.custom_bots.service.spool_budget.used < 700 * 1024:
            await asyncio.sleep(0.02)
    refused = await stalled_upload(bob, b"y" * (700 * 1024))
    code, reason, metadata, retry = details(refused)
    assert (code, reason, metadata, retry) == (RESOURCE_EXHAUSTED, "SERVER_BUSY", {"limit": "1048576"}, 5.0)
    assert details(await holding)[:2] == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPLOAD_IDLE")
    assert stack.app.custom_bots.service.spool_budget.used == 0
    assert spool_files(stack) == []


# -- quotas ----------------------------------------------------------------------------------------


async def test_bot_quota_over_grpc_and_rest(stack_factory: Any, sessions: Any) -> None:
    stack = await stack_factory(envoy=True, max_bots_per_user=3)
    alice, bob = await register(stack.channel), await register(stack.channel)
    for user in (alice, bob):
        await add_custom_bot(sessions, user.id, name="my-bot")
    # Concurrent creates at the edge of the quota: exactly the quota passes.
    results = await asyncio.gather(*(outcome(alice.bots.CreateBot(create_bot_request(f"b{i}"),
                                                                   metadata=alice.metadata)) for i in range(8)))
    created = [r for r in results if isinstance(r, bot_pb2.Bot)]
    assert len(created) == 3, results
    refused = [r for r in results if not isinstance(r, bot_pb2.Bot)]
    assert {(details(r)[0], details(r)[1], details(r)[2]["limit"], details(r)[2]["resource"])
            for r in refused} == {(RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED", "3", "bots")}
    listed = await alice.bots.ListBots(bot_service_pb2.ListBotsRequest(), metadata=alice.metadata)
    assert len(listed.bots) == 3  # nothing of a refused create was kept
    async with httpx.AsyncClient(base_url=stack.http_url, headers=alice.headers, timeout=10) as http:
        response = await http.post("/api/bots", json={"name": "rest", "config": bot_config()})
        assert (response.status_code, rest_reason(response)) == (429, "QUOTA_EXCEEDED")
        assert "retry-after" not in response.headers  # waiting does not help
        # Deleting one makes room.
        deleted = await http.delete(f"/api/bots/{created[0].id}")
        assert deleted.status_code == 200, deleted.text
        response = await http.post("/api/bots", json={"name": "rest", "config": bot_config()})
        assert response.status_code == 200, response.text
    # The quota is per owner: bob is at zero.
    assert (await bob.bots.CreateBot(create_bot_request(), metadata=bob.metadata)).name == "my bot"


async def test_active_backtest_quota_counts_unfinished_runs_only(stack_factory: Any, sessions: Any) -> None:
    stack = await stack_factory(envoy=True, max_active_backtests_per_user=2)
    alice = await register(stack.channel)
    await add_backtestable_bot(sessions, alice.id)

    def request() -> backtest_service_pb2.CreateBacktestRequest:
        return backtest_service_pb2.CreateBacktestRequest(
            backtest=backtest_pb2.Backtest(name="Q1", config=struct(backtest_config())))

    first = await alice.backtests.CreateBacktest(request(), metadata=alice.metadata)
    await alice.backtests.CreateBacktest(request(), metadata=alice.metadata)
    refused = await outcome(alice.backtests.CreateBacktest(request(), metadata=alice.metadata))
    code, reason, metadata, _ = details(refused)
    assert (code, reason, metadata) == (RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED",
                                        {"limit": "2", "resource": "activeBacktests"})
    async with httpx.AsyncClient(base_url=stack.http_url, headers=alice.headers, timeout=10) as http:
        body = {"name": "Q1", "config": backtest_config()}
        response = await http.post("/api/backtests", json=body)
        assert (response.status_code, rest_reason(response)) == (429, "QUOTA_EXCEEDED")
        # A cancelled run is finished: it no longer counts.
        await alice.backtests.CancelBacktest(backtest_service_pb2.CancelBacktestRequest(id=first.id),
                                             metadata=alice.metadata)
        response = await http.post("/api/backtests", json=body)
        assert response.status_code == 200, response.text


async def test_custom_bot_version_quota_over_grpc_and_rest(stack_factory: Any) -> None:
    stack = await stack_factory(envoy=True, max_custom_bot_versions_per_user=2)
    alice = await register(stack.channel)

    def requests(data: bytes) -> Any:
        return iter([custom_bot_service_pb2.UploadCustomBotRequest(
            chunk={"content_type": "application/zip", "data": data})])

    for version in ("1.0.0", "1.1.0"):
        await alice.custom_bots.UploadCustomBot(requests(bot_zip(version=version)), metadata=alice.metadata)
    refused = await outcome(alice.custom_bots.UploadCustomBot(requests(bot_zip(version="1.2.0")),
                                                              metadata=alice.metadata))
    code, reason, metadata, _ = details(refused)
    assert (code, reason, metadata) == (RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED",
                                        {"limit": "2", "resource": "customBotVersions"})
    async with httpx.AsyncClient(base_url=stack.http_url, headers=alice.headers, timeout=20) as http:
        response = await http.post("/api/custom-bots/upload", content=bot_zip(version="1.3.0"),
                                   headers={"content-type": "application/zip"})
        # Not turned into 413 by the upload route's rewrite: it is not a size problem.
        assert (response.status_code, rest_reason(response)) == (429, "QUOTA_EXCEEDED")
    listed = await alice.custom_bots.ListCustomBots(
        custom_bot_service_pb2.ListCustomBotsRequest(name="sma-crossover"), metadata=alice.metadata)
    assert [b.version for b in listed.custom_bots] == ["1.1.0", "1.0.0"]
    assert uuid.UUID(listed.custom_bots[0].id)
