"""Login and registration throttles through Envoy: 429 with the JSON Status body, and the
address Envoy appends to x-forwarded-for is the one that is limited (a client's own entries
are not)."""

from __future__ import annotations

import ipaddress
import socket

import grpc
import httpx
import pytest

from tests.e2e.test_identity_rest import PASSWORD, error_of
from tests.fixtures.services import service_unavailable
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.devtools.devstack import descriptor_set_path
from the0.devtools.embedded.envoy import start_envoy
from the0.devtools.embedded.processes import free_port
from the0.server.envoy_config import render_envoy_config

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")
    body, info = error_of(response)
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert info["reason"] == "RATE_LIMITED" and info["domain"] == "api.the0.dev"
    retry = [d for d in body["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry and retry[0]["retryDelay"].endswith("s")


@SQLITE_ONLY
async def test_register_and_login_floods_get_429_json(stack_factory):
    stack = await stack_factory(envoy=True, registrations_per_address=2, login_attempts_per_address=3)
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http:
        statuses = []
        for i in range(4):
            response = await http.post("/api/auth/register", json={
                "email": f"u{i}@example.com", "password": PASSWORD, "username": f"user{i}"})
            statuses.append(response.status_code)
        assert statuses[:2] == [200, 200]
        assert_rate_limited(response)
        for i in range(3):
            wrong = await http.post("/api/auth/login", json={"email": f"guess{i}@example.com",
                                                              "password": "wrong password"})
            assert wrong.status_code == 401 and error_of(wrong)[1]["reason"] == "INVALID_CREDENTIALS"
        assert_rate_limited(await http.post("/api/auth/login", json={"email": "u0@example.com",
                                                                      "password": PASSWORD}))


def _non_loopback_address() -> str | None:
    """One of this machine's own non-loopback IPv4 addresses (the source of a route out)."""
    for target in ("192.0.2.123", "198.51.100.1", "10.255.255.254"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))
            except OSError:
                continue
            address = probe.getsockname()[0]
            if not ipaddress.ip_address(address).is_loopback:
                return str(address)
    return None


@SQLITE_ONLY
async def test_envoy_names_the_real_client_and_a_forged_entry_does_not_help(stack_factory, tmp_path):
    """Envoy on all interfaces, the client on a non-loopback address of this machine: the
    server (trusting loopback, where Envoy is) limits that address, not the one it claims."""
    client_ip = _non_loopback_address()
    if client_ip is None:
        service_unavailable("no non-loopback address on this machine")  # skips locally, fails on CI
    stack = await stack_factory(login_attempts_per_address=3)
    port, admin_port = free_port(), free_port()
    config = render_envoy_config(http_port=port, admin_port=admin_port, grpc_host="127.0.0.1",
                                 grpc_port=stack.app.port, frontend_url="http://localhost:3000",
                                 descriptor_path=str(descriptor_set_path()), listen_address="0.0.0.0")
    envoy = await start_envoy(config, tmp_path / "envoy", admin_port, concurrency=1)
    try:
        async with httpx.AsyncClient(base_url=f"http://{client_ip}:{port}", timeout=10) as http:
            answers = []
            for i in range(4):
                response = await http.post(
                    "/api/auth/login", json={"email": f"guess{i}@example.com", "password": "wrong password"},
                    headers={"x-forwarded-for": f"203.0.113.{i}"})  # a fresh lie each time
                answers.append(response.status_code)
            assert answers == [401, 401, 401, 429]
            assert_rate_limited(response)
    finally:
        await envoy.astop()
    # The limited address was the client's, not Envoy's own loopback: a direct caller there
    # (also loopback, a different address from the server's point of view) is not throttled.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await auth_service_pb2_grpc.AuthServiceStub(stack.channel).Login(
            auth_service_pb2.LoginRequest(email="guess9@example.com", password="wrong password"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
