"""Server streams re-check their credentials: logout, API-key revocation and expiry end an open watch.

Each watch is opened on one replica and the credential ended on another, so the
revocation has to travel (NATS fan-out, identity/revocations.py). The watch must
end within a second with a last ``unauthenticated`` message (what a REST client
sees) and then UNAUTHENTICATED with the matching ErrorInfo reason (what a gRPC
client sees). Heartbeats are left at their default (25 s), so nothing but the
guard can end the stream in time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import grpc
import httpx
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.server import Stack, StackFactory
from tests.unit.test_archive_checks import bot_zip
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.custom_bot.v1 import custom_bot_pb2, custom_bot_service_pb2, custom_bot_service_pb2_grpc

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = SQLITE_ONLY
WITHIN_SECONDS = 1.0


def custom_bots(stack: Stack) -> custom_bot_service_pb2_grpc.CustomBotServiceStub:
    return custom_bot_service_pb2_grpc.CustomBotServiceStub(stack.channel)


async def register(stack: Stack) -> str:
    name = f"u{uuid.uuid4().hex[:10]}"
    tokens = await auth_service_pb2_grpc.AuthServiceStub(stack.channel).Register(
        auth_service_pb2.RegisterRequest(email=f"{name}@example.com", password="correct horse battery",
                                         username=name))
    return tokens.access_token


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def upload(stack: Stack, metadata: list[tuple[str, str]]) -> custom_bot_pb2.CustomBot:
    requests = iter([custom_bot_service_pb2.UploadCustomBotRequest(
        chunk={"content_type": "application/zip", "data": bot_zip()})])
    return await custom_bots(stack).UploadCustomBot(requests, metadata=metadata)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return info.reason
    return ""


async def assert_ends(watch: Any, reason: str, started: float, *, within: float = WITHIN_SECONDS) -> float:
    """The watch's next message is the terminal one, then UNAUTHENTICATED; returns when it ended."""
    last = await asyncio.wait_for(watch.read(), started - time.monotonic() + within + 2)
    ended = time.monotonic()
    assert last.WhichOneof("event") == "unauthenticated", last
    assert last.unauthenticated.reason == reason
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await watch.read()
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(raised.value) == reason
    assert ended - started < within, f"the watch ended {ended - started:.2f} s after its credential"
    return ended


async def two_replicas(stack_factory: StackFactory, **settings: Any) -> tuple[Stack, Stack]:
    a, b = await stack_factory(**settings), await stack_factory(**settings)
    for replica in (a, b):
        await asyncio.wait_for(replica.app.identity.revocations.listening.wait(), 10)
    return a, b


async def test_logout_ends_a_watch_on_another_replica_within_a_second(stack_factory: StackFactory) -> None:
    a, b = await two_replicas(stack_factory)
    token = await register(a)
    created = await upload(a, bearer(token))
    watch = custom_bots(b).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                          metadata=bearer(token))
    first = await watch.read()
    assert first.custom_bot.id == created.id

    started = time.monotonic()
    await auth_service_pb2_grpc.AuthServiceStub(a.channel).Logout(auth_service_pb2.LogoutRequest(),
                                                                  metadata=bearer(token))
    await assert_ends(watch, "TOKEN_REVOKED", started)
    # The stream's wait on the revocation is gone with it.
    assert b.app.identity.revocations.waiter_count == 0


async def test_logout_ends_a_rest_watch_through_envoy_with_a_last_line(stack_factory: StackFactory) -> None:
    a = await stack_factory()
    b = await stack_factory(envoy=True)
    await asyncio.wait_for(b.app.identity.revocations.listening.wait(), 10)
    token = await register(a)
    created = await upload(a, bearer(token))
    assert b.http_url is not None
    async with (
        httpx.AsyncClient(base_url=b.http_url, timeout=10) as http,
        http.stream("GET", f"/api/custom-bots/{created.id}/watch", headers=dict(bearer(token))) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        first = json.loads(await anext(lines))
        assert first["customBot"]["id"] == created.id
        started = time.monotonic()
        logout = await http.post("/api/auth/logout", json={}, headers=dict(bearer(token)))
        assert logout.status_code == 200, logout.text
        last = json.loads(await asyncio.wait_for(anext(lines), 3))
        elapsed = time.monotonic() - started
        assert last["unauthenticated"]["reason"] == "TOKEN_REVOKED", last
        assert elapsed < WITHIN_SECONDS, elapsed
        # Nothing follows but the end of the body (or Envoy's reset of it).
        rest: list[str] = []
        try:
            rest = [line async for line in lines if line.strip()]
        except httpx.HTTPError:
            pass
        assert all("customBot" not in line and "heartbeat" not in line for line in rest), rest


async def test_api_key_revocation_ends_a_watch_on_another_replica(stack_factory: StackFactory) -> None:
    a, b = await two_replicas(stack_factory)
    token = await register(a)
    keys = api_key_service_pb2_grpc.ApiKeyServiceStub(a.channel)
    created_key = await keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="watcher")),
                                          metadata=bearer(token))
    api_key = [("authorization", f"ApiKey {created_key.secret}")]
    created = await upload(a, api_key)
    watch = custom_bots(b).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                          metadata=api_key)
    assert (await watch.read()).custom_bot.id == created.id

    started = time.monotonic()
    await keys.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created_key.api_key.id),
                            metadata=bearer(token))
    await assert_ends(watch, "API_KEY_INVALID", started)


async def test_a_watch_ends_when_its_access_token_expires(stack_factory: StackFactory) -> None:
    # Settings.from_env allows 30 s at the least; tests construct Settings directly.
    stack = await stack_factory(jwt_expires_in=timedelta(seconds=4))
    token = await register(stack)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    created = await upload(stack, bearer(token))
    watch = custom_bots(stack).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                              metadata=bearer(token))
    assert (await watch.read()).custom_bot.id == created.id
    # From now until exp the stream stays open; it ends at exp, not at the next heartbeat (25 s).
    remaining = expires_at - time.time()
    assert remaining > 0.5, "the upload took too long for this test's token lifetime"
    started = time.monotonic() + remaining
    await assert_ends(watch, "TOKEN_EXPIRED", started, within=WITHIN_SECONDS)
    assert time.time() >= expires_at - 0.05


async def test_a_watch_whose_client_goes_away_releases_its_guard(stack_factory: StackFactory) -> None:
    stack = await stack_factory()
    token = await register(stack)
    created = await upload(stack, bearer(token))
    watch = custom_bots(stack).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                              metadata=bearer(token))
    await watch.read()
    assert stack.app.identity.revocations.waiter_count == 1
    watch.cancel()
    async with asyncio.timeout(5):
        while stack.app.identity.revocations.waiter_count:
            await asyncio.sleep(0.02)
