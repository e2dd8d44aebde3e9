"""Refusing is cheap: a made-up API key and the public GetHealth cost (almost) nothing per request.

The checksum of an API key is public (CRC32), so anybody can make well-formed
keys; each used to cost a database read. GetHealth is public and used to run
its database, NATS and S3 probes on every call. Database reads are counted
with an SQLAlchemy listener on the server's own engine; probes by counting
calls of the NATS probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Self

import grpc
import httpx
import pytest
from sqlalchemy import event

from tests.fixtures.server import Stack, StackFactory
from tests.integration.test_stream_credentials import bearer, reason_of, register
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc
from the0.server.identity import api_key_secrets
from the0.server.nats_link import NatsLink

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Statements:
    """SQL statements the server's engine ran that mention ``needle``."""

    def __init__(self, stack: Stack, needle: str) -> None:
        self.count = 0
        self._needle = needle
        self._engine = stack.app.engine.sync_engine

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self._needle in statement:
            self.count += 1

    def __enter__(self) -> Self:
        event.listen(self._engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


def api_key(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"ApiKey {secret}")]


async def current_user_code(stack: Stack, secret: str) -> tuple[grpc.StatusCode, str]:
    try:
        await auth_service_pb2_grpc.AuthServiceStub(stack.channel).GetCurrentUser(
            auth_service_pb2.GetCurrentUserRequest(), metadata=api_key(secret))
    except grpc.aio.AioRpcError as error:
        return error.code(), reason_of(error)
    return grpc.StatusCode.OK, ""


async def test_a_made_up_api_key_costs_one_read_however_often_it_is_tried(stack_factory: StackFactory) -> None:
    stack = await stack_factory(api_key_miss_cache_seconds=30.0)
    fake = api_key_secrets.new_secret()  # well-formed, checksum right, never stored
    with Statements(stack, "api_keys") as reads:
        concurrent = await asyncio.gather(*(current_user_code(stack, fake) for _ in range(40)))
        sequential = [await current_user_code(stack, fake) for _ in range(40)]
    assert set(concurrent + sequential) == {(grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")}
    assert reads.count == 1, f"{reads.count} reads for 80 tries of one made-up key"


async def test_a_miss_is_forgotten_after_its_ttl(stack_factory: StackFactory) -> None:
    stack = await stack_factory(api_key_miss_cache_seconds=0.3)
    fake = api_key_secrets.new_secret()
    with Statements(stack, "api_keys") as reads:
        assert await current_user_code(stack, fake) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
        await asyncio.sleep(0.4)
        assert await current_user_code(stack, fake) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    assert reads.count == 2


@pytest.fixture
def next_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Secrets CreateApiKey hands out next (so a test can present a key before it exists)."""
    queue: list[str] = []
    real = api_key_secrets.new_secret
    monkeypatch.setattr(api_key_secrets, "new_secret", lambda: queue.pop(0) if queue else real())
    yield queue


async def test_a_key_refused_before_it_existed_works_at_once_when_created(
    stack_factory: StackFactory, next_secret: list[str]
) -> None:
    stack = await stack_factory(api_key_miss_cache_seconds=60.0)
    secret = api_key_secrets.new_secret()
    assert await current_user_code(stack, secret) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    next_secret.append(secret)
    token = await register(stack)
    created = await api_key_service_pb2_grpc.ApiKeyServiceStub(stack.channel).CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="late")), metadata=bearer(token))
    assert created.secret == secret
    assert await current_user_code(stack, secret) == (grpc.StatusCode.OK, "")


async def test_get_health_runs_one_probe_for_many_callers(
    stack_factory: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes = 0
    real_ping = NatsLink.ping

    async def counting_ping(self: NatsLink) -> None:
        nonlocal probes
        probes += 1
        await asyncio.sleep(0.05)  # a probe takes a while: concurrent callers overlap it
        await real_ping(self)

    monkeypatch.setattr(NatsLink, "ping", counting_ping)
    stack = await stack_factory(envoy=True)
    health = health_service_pb2_grpc.HealthServiceStub(stack.channel)
    responses = await asyncio.gather(*(health.GetHealth(health_service_pb2.GetHealthRequest()) for _ in range(50)))
    assert {r.status for r in responses} == {"ok"}
    assert probes == 1, f"{probes} probe runs for 50 concurrent calls"
    # Within the second the result is served as it is; after it, probed again (once).
    again = await health.GetHealth(health_service_pb2.GetHealthRequest())
    assert again.checks.nats == "ok" and probes == 1
    await asyncio.sleep(1.1)
    await asyncio.gather(*(health.GetHealth(health_service_pb2.GetHealthRequest()) for _ in range(20)))
    assert probes == 2

    # REST through Envoy shares the same run.
    assert stack.http_url is not None
    await asyncio.sleep(1.1)
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http:
        replies = await asyncio.gather(*(http.get("/health") for _ in range(30)))
    assert {r.status_code for r in replies} == {200}
    assert probes == 3
