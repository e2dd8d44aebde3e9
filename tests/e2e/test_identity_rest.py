"""Identity through Envoy's REST surface, as the web dashboard uses it, and gRPC with an API key as the CLI does."""

from __future__ import annotations

import grpc
import httpx
import pytest

from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

PASSWORD = "ada trades at dawn, slowly"


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(envoy=True, api_key_last_used_flush_seconds=0.1)


@pytest.fixture
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as client:
        yield client


def error_of(response: httpx.Response) -> tuple[dict, dict]:
    body = response.json()
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, body
    return body, infos[0]


async def test_dashboard_and_cli_flow(stack, http):
    registered = await http.post("/api/auth/register", json={
        "email": "Ada@Example.com", "password": PASSWORD, "username": "ada", "firstName": "Ada"})
    assert registered.status_code == 200, registered.text
    body = registered.json()
    assert body["tokenType"] == "Bearer" and body["user"]["email"] == "ada@example.com"
    assert body["user"]["role"] == "ROLE_USER"
    # Neither the password nor its hash; the one field named after it is the admin's reset flag.
    assert PASSWORD not in registered.text and "passwordHash" not in registered.text
    assert "argon2" not in registered.text
    assert [k for k in body["user"] if "password" in k.lower()] == ["passwordResetRequired"]

    login = await http.post("/api/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    session = {"authorization": f"Bearer {tokens['accessToken']}"}
    me = await http.get("/api/auth/me", headers=session)
    assert me.status_code == 200 and me.json()["username"] == "ada"

    created = await http.post("/api/api-keys", json={"name": "laptop"}, headers=session)
    assert created.status_code == 200, created.text
    secret, key = created.json()["secret"], created.json()["apiKey"]
    assert secret.startswith("the0_") and key["prefix"] == secret[:10] and key["state"] == "API_KEY_STATE_ACTIVE"

    # The CLI: gRPC with the key (through Envoy too), and REST with x-api-key.
    async with grpc.aio.insecure_channel(stack.http_url.removeprefix("http://")) as channel:
        user = await auth_service_pb2_grpc.AuthServiceStub(channel).GetCurrentUser(
            auth_service_pb2.GetCurrentUserRequest(), metadata=(("authorization", f"ApiKey {secret}"),))
    assert user.username == "ada"
    assert (await http.get("/api/auth/me", headers={"x-api-key": secret})).status_code == 200
    denied = await http.post("/api/api-keys", json={"name": "minted"}, headers={"x-api-key": secret})
    assert denied.status_code == 403
    assert error_of(denied)[1]["reason"] == "API_KEY_NOT_ALLOWED"

    listed = await http.get("/api/api-keys", headers=session)
    assert listed.status_code == 200 and secret not in listed.text
    assert [k["name"] for k in listed.json()["apiKeys"]] == ["laptop"]

    revoked = await http.delete(f"/api/api-keys/{key['id']}", headers=session)
    assert revoked.status_code == 200 and revoked.json()["state"] == "API_KEY_STATE_REVOKED"
    assert secret not in revoked.text
    rejected = await http.get("/api/auth/me", headers={"x-api-key": secret})
    assert rejected.status_code == 401
    assert error_of(rejected)[1]["reason"] == "API_KEY_INVALID"
    assert secret not in rejected.text

    refreshed = await http.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 200
    new_session = {"authorization": f"Bearer {refreshed.json()['accessToken']}"}
    logout = await http.post("/api/auth/logout", json={}, headers=new_session)
    assert logout.status_code == 200
    after = await http.get("/api/auth/me", headers=new_session)
    assert after.status_code == 401
    assert error_of(after)[1]["reason"] == "TOKEN_REVOKED"


async def test_rest_errors_are_json_with_the_right_status(http):
    missing = await http.get("/api/auth/me")
    assert missing.status_code == 401
    body, info = error_of(missing)
    assert body["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert info["reason"] == "TOKEN_MISSING" and info["domain"] == "api.the0.dev"
    bad = await http.get("/api/api-keys", headers={"authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401 and error_of(bad)[1]["reason"] == "TOKEN_INVALID"

    await http.post("/api/auth/register", json={"email": "ada@example.com", "password": PASSWORD, "username": "ada"})
    duplicate = await http.post("/api/auth/register",
                                json={"email": "ADA@example.com", "password": PASSWORD, "username": "ada2"})
    assert duplicate.status_code == 409 and error_of(duplicate)[1]["reason"] == "ALREADY_EXISTS"

    for _ in range(5):
        wrong = await http.post("/api/auth/login", json={"email": "ada@example.com", "password": "wrong password"})
        assert wrong.status_code == 401 and error_of(wrong)[1]["reason"] == "INVALID_CREDENTIALS"
    limited = await http.post("/api/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert limited.status_code == 429
    body, info = error_of(limited)
    assert info["reason"] == "RATE_LIMITED"
    retry = [d for d in body["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry and retry[0]["retryDelay"].endswith("s")
