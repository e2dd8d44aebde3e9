"""Sessions end to end (issue 15): ListSessions, RevokeSession, LogoutEverywhere, over gRPC and REST."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import httpx
import pytest

from tests.e2e.test_admin import eventually, login, refused, register
from tests.e2e.test_bots import rpc_error
from tests.fixtures.accounts import PASSWORD
from the0.auth.v1 import auth_service_pb2

ME = auth_service_pb2.GetCurrentUserRequest()


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True)


async def test_sessions_are_listed_with_agent_address_and_times_and_one_can_be_revoked(
    stack_factory: Any,
) -> None:
    # Replica B's database re-read is slow: only the NATS fan-out ends A's session in time.
    replica_a = await stack_factory(revocation_sync_seconds=30.0)
    replica_b = await stack_factory(revocation_sync_seconds=30.0)
    for replica in (replica_a, replica_b):
        await asyncio.wait_for(replica.app.identity.revocations.listening.wait(), 10)
    laptop = await register(replica_a.channel)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica_b.app.port}",
                                         options=[("grpc.primary_user_agent", "the0-cli/9.9")]) as phone_channel:
        phone = await login(phone_channel, laptop.email, PASSWORD)
        listed = await phone.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=phone.metadata)
        assert len(listed.sessions) == 2
        newest, oldest = listed.sessions
        assert newest.current and not oldest.current  # newest first; the caller's is marked
        assert newest.user_agent.startswith("the0-cli/9.9")
        assert newest.client_address == "127.0.0.1"
        assert newest.create_time.ToDatetime() >= oldest.create_time.ToDatetime()
        assert newest.last_use_time == newest.create_time

        # The phone ends the laptop's session; the laptop's token stops on replica A within a second.
        on_a = laptop.on(replica_a.channel)
        await on_a.auth.GetCurrentUser(ME, metadata=laptop.metadata)
        await phone.auth.RevokeSession(auth_service_pb2.RevokeSessionRequest(id=oldest.id), metadata=phone.metadata)
        took = await eventually(lambda: refused(on_a.auth.GetCurrentUser(ME, metadata=laptop.metadata)), 1.0)
        assert took < 1.0
        code, reason, *_ = await rpc_error(on_a.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(
            refresh_token=laptop.tokens.refresh_token)))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
        after = await phone.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=phone.metadata)
        assert [s.id for s in after.sessions] == [newest.id]
        # Idempotent for its owner.
        await phone.auth.RevokeSession(auth_service_pb2.RevokeSessionRequest(id=oldest.id), metadata=phone.metadata)
        # A refresh moves "last used".
        refreshed = await phone.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(
            refresh_token=phone.tokens.refresh_token))
        again = await phone.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=(
            ("authorization", f"Bearer {refreshed.access_token}"),))
        assert again.sessions[0].last_use_time.ToDatetime() > again.sessions[0].create_time.ToDatetime()


async def test_another_users_session_is_not_found_and_api_keys_are_refused(stack: Any) -> None:
    alice, mallory = await register(stack.channel), await register(stack.channel)
    alices = await alice.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=alice.metadata)
    code, reason, *_ = await rpc_error(mallory.auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(id=alices.sessions[0].id), metadata=mallory.metadata))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    await alice.auth.GetCurrentUser(ME, metadata=alice.metadata)  # still works
    mallorys = await mallory.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=mallory.metadata)
    assert alices.sessions[0].id not in [s.id for s in mallorys.sessions]
    code, reason, _, fields = await rpc_error(alice.auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(id="nope"), metadata=alice.metadata))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["id"])
    key = await alice.api_key()
    for call in (
        alice.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=key),
        alice.auth.LogoutEverywhere(auth_service_pb2.LogoutEverywhereRequest(), metadata=key),
        alice.auth.RevokeSession(auth_service_pb2.RevokeSessionRequest(id=alices.sessions[0].id), metadata=key),
    ):
        code, reason, *_ = await rpc_error(call)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")


async def test_logout_everywhere_ends_every_session_and_says_how_many(stack: Any) -> None:
    first = await register(stack.channel)
    others = [await login(stack.channel, first.email, PASSWORD) for _ in range(2)]
    key = await first.api_key()
    kept = await others[0].auth.LogoutEverywhere(auth_service_pb2.LogoutEverywhereRequest(keep_current=True),
                                                 metadata=others[0].metadata)
    assert kept.sessions_revoked == 2
    await others[0].auth.GetCurrentUser(ME, metadata=others[0].metadata)
    for gone in (first, others[1]):
        code, reason, *_ = await rpc_error(first.auth.GetCurrentUser(ME, metadata=gone.metadata))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    everything = await others[0].auth.LogoutEverywhere(auth_service_pb2.LogoutEverywhereRequest(),
                                                       metadata=others[0].metadata)
    assert everything.sessions_revoked == 1
    assert await refused(first.auth.GetCurrentUser(ME, metadata=others[0].metadata))
    await first.auth.GetCurrentUser(ME, metadata=key)  # API keys are not sessions


async def test_session_routes_through_envoy(stack: Any) -> None:
    name = f"u{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15) as http:
        registered = await http.post("/api/auth/register", json={
            "email": f"{name}@example.com", "password": PASSWORD, "username": name},
            headers={"user-agent": "Firefox/200"})
        assert registered.status_code == 200, registered.text
        login_reply = await http.post("/api/auth/login", json={"email": f"{name}@example.com", "password": PASSWORD},
                                      headers={"user-agent": "Safari/99"})
        token = login_reply.json()["accessToken"]
        auth = {"authorization": f"Bearer {token}"}
        listed = await http.get("/api/auth/sessions", headers=auth, params={"pageSize": 1})
        assert listed.status_code == 200, listed.text
        [session] = listed.json()["sessions"]
        assert session["userAgent"] == "Safari/99" and session["current"] is True
        assert session["clientAddress"] and session["lastUseTime"] and session["createTime"]
        second_page = await http.get("/api/auth/sessions", headers=auth,
                                     params={"pageToken": listed.json()["nextPageToken"]})
        [older] = second_page.json()["sessions"]
        assert older["userAgent"] == "Firefox/200" and older["current"] is False
        revoked = await http.delete(f"/api/auth/sessions/{older['id']}", headers=auth)
        assert revoked.status_code == 200, revoked.text
        stale = await http.get("/api/auth/me", headers={"authorization": f"Bearer {registered.json()['accessToken']}"})
        assert stale.status_code == 401
        missing = await http.delete(f"/api/auth/sessions/{uuid.uuid4()}", headers=auth)
        assert missing.status_code == 404
        everywhere = await http.post("/api/auth/logout-everywhere", headers=auth, json={})
        assert everywhere.status_code == 200 and everywhere.json()["sessionsRevoked"] == 1
        assert (await http.get("/api/auth/me", headers=auth)).status_code == 401
