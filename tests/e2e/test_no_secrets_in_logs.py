"""No credential reaches a log line: the real ``the0-server`` process, its stderr read whole.

The server runs as in production (``python -m the0.server``, JSON logs at DEBUG)
with a password in DATABASE_URL and in NATS_URL and separate key rings. A whole
flow runs against it — register, a wrong-password login, login, refresh,
create an API key, use it, revoke it, log out — and NATS goes away and comes
back (the link logs every disconnect and reconnect). Then every byte the
process wrote is searched for each secret of the flow.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.devtools.embedded.processes import free_port
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc

DB_PASSWORD = "db-pass-" + uuid.uuid4().hex
NATS_USER, NATS_PASSWORD = "natsuser" + uuid.uuid4().hex[:6], "nats-pass-" + uuid.uuid4().hex
JWT_KEY = "jwt-" + uuid.uuid4().hex + uuid.uuid4().hex
HASH_KEY = "hash-" + uuid.uuid4().hex + uuid.uuid4().hex
PAGE_KEY = "page-" + uuid.uuid4().hex + uuid.uuid4().hex
SECRETS_KEY = "seal-" + uuid.uuid4().hex + uuid.uuid4().hex
MAILER_KEY = "mailer-key-" + uuid.uuid4().hex
PASSWORD, WRONG_PASSWORD = "correct horse battery " + uuid.uuid4().hex[:8], "wrong horse " + uuid.uuid4().hex[:8]


def with_userinfo(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, ""))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_whole_flow_logs_no_credential(database_url: str, isolated_nats: EmbeddedNats,
                                               tmp_path: Path) -> None:
    # The test cluster trusts local connections: the password is accepted and never checked.
    db_url = with_userinfo(database_url, "postgres", DB_PASSWORD)
    nats_url = with_userinfo(isolated_nats.url, NATS_USER, NATS_PASSWORD)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_"))}
    env |= {
        "DATABASE_URL": db_url, "NATS_URL": nats_url, "THE0_GRPC_HOST": "127.0.0.1", "THE0_GRPC_PORT": str(port),
        "THE0_JWT_KEYS": f"k1:{JWT_KEY}", "THE0_API_KEY_HASH_KEYS": f"h1:{HASH_KEY}",
        "THE0_PAGE_TOKEN_KEYS": f"p1:{PAGE_KEY}", "THE0_SECRETS_KEY": f"s1:{SECRETS_KEY}",
        "THE0_MAILER_KEY": f"m1:{MAILER_KEY}", "THE0_LOG_LEVEL": "DEBUG", "THE0_DATA_DIR": str(tmp_path), "THE0_OBJECT_STORE_DIR": str(tmp_path / "objects"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "the0.server", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    secrets: dict[str, str] = {
        "database password": DB_PASSWORD, "NATS password": NATS_PASSWORD, "NATS user": NATS_USER,
        "JWT key": JWT_KEY, "API-key hash key": HASH_KEY, "page-token key": PAGE_KEY, "secrets key": SECRETS_KEY,
        "mailer key": MAILER_KEY,
        "password": PASSWORD, "wrong password": WRONG_PASSWORD,
    }
    failure: BaseException | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_until_serving(channel, process)
            secrets |= await _whole_flow(channel)
            await isolated_nats.stop()
            await asyncio.sleep(2.5)  # the link reports the loss, and each failed reconnect
            await isolated_nats.restart()
            await _wait_until_nats_is_back(channel)
    except BaseException as error:  # noqa: BLE001 - re-raised below, with what the server printed
        failure = error
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    output = (stdout + stderr).decode(errors="replace")
    if failure is not None:
        # Secrets are masked here too: this message reaches CI logs.
        tail = output[-4000:]
        for name, secret in secrets.items():
            tail = tail.replace(secret, f"<{name}>")
        raise AssertionError(f"the flow failed ({failure!r}); the server's last output:\n{tail}") from failure
    assert '"method":"/the0.api_key.v1.ApiKeyService/CreateApiKey"' in output, "no access lines captured"
    assert "nats disconnected" in output and "***@" in output, "the NATS URL was never logged: test the test"
    leaked = [name for name, secret in secrets.items() if secret in output]
    assert not leaked, f"in the server's output: {leaked}"


async def wait_until_serving(
    channel: grpc.aio.Channel, process: asyncio.subprocess.Process, *, within: float = 60
) -> None:
    """Until a the0-server child answers GetHealth on ``channel``; fails at once if it exited."""
    health = health_service_pb2_grpc.HealthServiceStub(channel)
    async with asyncio.timeout(within):
        while True:
            if process.returncode is not None:
                pytest.fail(f"the0-server exited with {process.returncode}")
            try:
                await health.GetHealth(health_service_pb2.GetHealthRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)


async def _wait_until_nats_is_back(channel: grpc.aio.Channel) -> None:
    """Until GetHealth sees NATS again: the link has reconnected (and logged it), however slow the machine."""
    health = health_service_pb2_grpc.HealthServiceStub(channel)
    async with asyncio.timeout(30):
        while True:
            try:
                reply = await health.GetHealth(health_service_pb2.GetHealthRequest(), timeout=5)
                if reply.checks.nats == "ok":
                    return
            except grpc.aio.AioRpcError:
                pass  # a database probe that timed out on a loaded machine: ask again
            await asyncio.sleep(0.25)


async def _whole_flow(channel: grpc.aio.Channel) -> dict[str, str]:
    auth = auth_service_pb2_grpc.AuthServiceStub(channel)
    keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
    name = f"u{uuid.uuid4().hex[:10]}"
    email = f"{name}@example.com"
    registered = await auth.Register(auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, username=name))
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.Login(auth_service_pb2.LoginRequest(email=email, password=WRONG_PASSWORD))
    logged_in = await auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    refreshed = await auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=logged_in.refresh_token))
    session = [("authorization", f"Bearer {refreshed.access_token}")]
    created = await keys.CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="ci runner")), metadata=session)
    await auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(),
                              metadata=[("authorization", f"ApiKey {created.secret}")])
    await keys.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created.api_key.id), metadata=session)
    with pytest.raises(grpc.aio.AioRpcError):  # a refused credential is not logged either
        await auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(),
                                  metadata=[("authorization", f"ApiKey {created.secret}")])
    await auth.Logout(auth_service_pb2.LogoutRequest(), metadata=session)
    return {
        "registration access token": registered.access_token, "registration refresh token": registered.refresh_token,
        "login access token": logged_in.access_token, "login refresh token": logged_in.refresh_token,
        "refreshed access token": refreshed.access_token, "refreshed refresh token": refreshed.refresh_token,
        "API key secret": created.secret,
    }
