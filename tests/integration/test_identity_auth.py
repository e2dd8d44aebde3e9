"""Identity over gRPC against real servers: register, login, refresh, logout, API keys, the auth interceptor.

Runs on SQLite and PostgreSQL (``database_url``), with the session's NATS. Tests
that do not depend on the database pin it to SQLite to keep the suite quick.
Argon2 runs at a cheap cost here (tests/fixtures/server.py FAST_ARGON2) except
where a test passes the OWASP parameters explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import bcrypt
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect, text
from sqlalchemy.pool import NullPool

from tests.fixtures.accounts import start_of_a_window
from tests.fixtures.server import TEST_JWT_SECRET
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc, user_pb2
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.devtools.embedded.processes import free_port
from the0.server.db.engine import sync_url
from the0.server.identity.passwords import OWASP_MEMORY_KIB, OWASP_PARALLELISM, OWASP_TIME_COST

PASSWORD = "ada trades at dawn, slowly"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- helpers ---------------------------------------------------------------------------------------


def auth(channel: grpc.aio.Channel) -> auth_service_pb2_grpc.AuthServiceStub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


def keys(channel: grpc.aio.Channel) -> api_key_service_pb2_grpc.ApiKeyServiceStub:
    return api_key_service_pb2_grpc.ApiKeyServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def api_key_header(secret: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"ApiKey {secret}"),)


async def register(channel, name: str = "ada", **fields) -> auth_service_pb2.AuthTokens:
    request = auth_service_pb2.RegisterRequest(
        email=fields.pop("email", f"{name}@example.com"), password=fields.pop("password", PASSWORD),
        username=fields.pop("username", name), **fields,
    )
    return await auth(channel).Register(request)


async def me(channel, metadata) -> user_pb2.User:
    return await auth(channel).GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(), metadata=metadata)


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list]:
    status = rpc_status.from_call(error)
    assert status is not None, error
    info, others = None, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        else:
            others.append(detail)
    assert info is not None, status
    return info, others


async def expect_error(call, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    info, _ = details(raised.value)
    assert info.reason == reason
    return raised.value


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    _, others = details(error)
    fields = set()
    for detail in others:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields |= {v.field for v in bad.field_violations}
    return fields


def retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    for detail in details(error)[1]:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info
    return None


def run_sql(database_url: str, statement: str, **params):
    """Blocking: from a test sharing the server's event loop, call it through ``asyncio.to_thread``
    (a server coroutine holding an SQLite lock could otherwise never release it)."""
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def dump_database(database_url: str) -> str:
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            return "\n".join(repr(row) for t in tables for row in conn.execute(text(f'SELECT * FROM "{t}"')))
    finally:
        engine.dispose()


async def eventually(check, *, within: float, step: float = 0.02) -> float:
    """Poll ``check`` (async, True when done) until it passes; return the seconds it took."""
    started = time.perf_counter()
    while True:
        if await check():
            return time.perf_counter() - started
        if time.perf_counter() - started > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(step)


async def rejected(channel, metadata, reason: str) -> bool:
    try:
        await me(channel, metadata)
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.UNAUTHENTICATED and details(error)[0].reason == reason
    return False


# -- register, login, me ---------------------------------------------------------------------------


async def test_register_login_and_get_current_user(stack_factory):
    stack = await stack_factory()
    registered = await register(stack.channel, "ada", email="  Ada@Example.COM ", first_name="Ada",
                                last_name="Lovelace")
    assert registered.token_type == "Bearer"
    assert registered.user.email == "ada@example.com"
    assert registered.user.role == user_pb2.ROLE_USER
    assert registered.refresh_token and registered.access_token
    lifetime = registered.access_token_expire_time.ToDatetime(UTC) - datetime.now(UTC)
    assert timedelta(minutes=14) < lifetime <= timedelta(minutes=15, seconds=1)
    assert registered.refresh_token_expire_time.ToDatetime(UTC) - datetime.now(UTC) > timedelta(days=29)
    claims = jwt.decode(registered.access_token, TEST_JWT_SECRET, algorithms=["HS256"], audience="the0")
    assert {"sub", "sid", "role", "iss", "aud", "iat", "exp", "jti", "typ"} <= claims.keys()
    assert (claims["iss"], claims["typ"], claims["role"]) == ("the0-api", "access", "user")

    logged_in = await auth(stack.channel).Login(auth_service_pb2.LoginRequest(email="ADA@example.com ",
                                                                             password=PASSWORD))
    user = await me(stack.channel, bearer(logged_in.access_token))
    assert (user.id, user.username, user.first_name, user.last_name) == (registered.user.id, "ada", "Ada",
                                                                          "Lovelace")
    assert user.HasField("last_login_time")


async def test_registration_reports_every_bad_field_at_once(stack_factory):
    stack = await stack_factory()
    error = await expect_error(
        register(stack.channel, "x", email="not-an-email", username="a b", password="short",
                 first_name="f" * 101, last_name="l" * 101),
        grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED",
    )
    assert violations(error) == {"email", "username", "password", "firstName", "lastName"}
    error = await expect_error(
        register(stack.channel, "bob", email="bob@example.com", password="BOB@example.com"),
        grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED",
    )
    assert violations(error) == {"password"}
    error = await expect_error(auth(stack.channel).Register(auth_service_pb2.RegisterRequest()),
                               grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert violations(error) == {"email", "username", "password"}


async def test_duplicates_are_already_exists_case_insensitively(stack_factory):
    stack = await stack_factory()
    await register(stack.channel, "ada")
    await expect_error(register(stack.channel, "ada2", email="ADA@example.com"),
                       grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    await expect_error(register(stack.channel, "ada", email="other@example.com"),
                       grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")


@SQLITE_ONLY
async def test_registration_can_be_switched_off(stack_factory):
    stack = await stack_factory(registration_enabled=False)
    await expect_error(register(stack.channel, "ada"), grpc.StatusCode.FAILED_PRECONDITION, "REGISTRATION_DISABLED")


async def test_wrong_password_unknown_email_and_inactive_user_answer_alike(stack_factory, database_url):
    stack = await stack_factory()
    await register(stack.channel, "ada")
    login = auth(stack.channel).Login
    await expect_error(login(auth_service_pb2.LoginRequest(email="ada@example.com", password="wrong password")),
                       grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    await expect_error(login(auth_service_pb2.LoginRequest(email="nobody@example.com", password=PASSWORD)),
                       grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    await asyncio.to_thread(run_sql, database_url, "UPDATE users SET active = :no WHERE email = 'ada@example.com'", no=False)
    await expect_error(login(auth_service_pb2.LoginRequest(email="ada@example.com", password=PASSWORD)),
                       grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


@SQLITE_ONLY
async def test_unknown_email_takes_as_long_as_a_wrong_password_at_owasp_cost(stack_factory):
    stack = await stack_factory(argon2_memory_kib=OWASP_MEMORY_KIB, argon2_time_cost=OWASP_TIME_COST,
                                argon2_parallelism=OWASP_PARALLELISM,
                                login_attempts_per_account_address=100, login_attempts_per_address=100)
    await register(stack.channel, "ada")
    login = auth(stack.channel).Login

    async def timed(email: str) -> float:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError):
            await login(auth_service_pb2.LoginRequest(email=email, password="wrong password"))
        return time.perf_counter() - started

    known = sorted([await timed("ada@example.com") for _ in range(5)])[2]
    unknown = sorted([await timed(f"nobody{i}@example.com") for i in range(5)])[2]
    assert known > 0.005  # really hashing at OWASP cost, not skipping
    assert 0.5 < unknown / known < 2.0, (known, unknown)


@SQLITE_ONLY
async def test_login_is_throttled_per_email_with_retry_info(stack_factory):
    await start_of_a_window()  # the burst must fit in one fixed window
    stack = await stack_factory()
    await register(stack.channel, "ada")
    login = auth(stack.channel).Login
    wrong = auth_service_pb2.LoginRequest(email="ada@example.com", password="wrong password")
    for _ in range(5):
        await expect_error(login(wrong), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    # Even the right password is refused now, from this address: the limit is on attempts to
    # this account from here (tests/integration/test_throttles.py: the owner elsewhere is not).
    error = await expect_error(login(auth_service_pb2.LoginRequest(email="ADA@example.com", password=PASSWORD)),
                               grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    delay = retry_info(error)
    assert delay is not None and 1 <= delay.retry_delay.seconds <= 60
    # Another account from the same address is not blocked (5 < 20).
    await register(stack.channel, "bob")
    await auth(stack.channel).Login(auth_service_pb2.LoginRequest(email="bob@example.com", password=PASSWORD))


@SQLITE_ONLY
async def test_login_is_throttled_per_client_address(stack_factory):
    await start_of_a_window()  # the burst must fit in one fixed window
    stack = await stack_factory(login_attempts_per_address=4)
    await register(stack.channel, "ada")
    login = auth(stack.channel).Login
    for i in range(4):
        await expect_error(login(auth_service_pb2.LoginRequest(email=f"guess{i}@example.com", password="x" * 8)),
                           grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    error = await expect_error(login(auth_service_pb2.LoginRequest(email="ada@example.com", password=PASSWORD)),
                               grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert retry_info(error) is not None
    # The test client is on loopback, a trusted proxy by default, so it may name the address it
    # speaks for (as Envoy does): another address is not blocked. Forged headers from a peer
    # that is not a trusted proxy: tests/integration/test_throttles.py.
    other = (("x-forwarded-for", "203.0.113.9"),)
    await login(auth_service_pb2.LoginRequest(email="ada@example.com", password=PASSWORD), metadata=other)


async def test_bcrypt_hash_from_the_old_platform_is_rehashed_with_argon2id(stack_factory, database_url):
    stack = await stack_factory()
    now = datetime.now(UTC)
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2a$", 1)
    await asyncio.to_thread(run_sql, database_url, "INSERT INTO users (id, email, username, password_hash, first_name, last_name, role, "
            "active, created_at, updated_at) VALUES (:id, 'old@example.com', 'old', :hash, '', '', 'user', :yes, "
            ":now, :now)", id=str(uuid.uuid4()), hash=legacy, yes=True, now=now)
    login = auth(stack.channel).Login
    await expect_error(login(auth_service_pb2.LoginRequest(email="old@example.com", password="wrong password")),
                       grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert (await asyncio.to_thread(run_sql, database_url, "SELECT password_hash FROM users"))[0][0] == legacy
    await login(auth_service_pb2.LoginRequest(email="old@example.com", password=PASSWORD))
    stored = (await asyncio.to_thread(run_sql, database_url, "SELECT password_hash FROM users"))[0][0]
    assert stored.startswith("$argon2id$")
    await login(auth_service_pb2.LoginRequest(email="old@example.com", password=PASSWORD))


async def test_admin_is_bootstrapped_idempotently_by_two_replicas(stack_factory, database_url):
    settings = {"admin_email": "Root@Example.com", "admin_password": "admin password 1"}
    first, second = await asyncio.gather(stack_factory(**settings), stack_factory(**settings))
    for stack in (first, second):
        await asyncio.wait_for(stack.app.identity.admin_ready.wait(), 10)
    assert await asyncio.to_thread(run_sql, database_url, "SELECT email, role FROM users") == [("root@example.com", "admin")]
    tokens = await auth(first.channel).Login(auth_service_pb2.LoginRequest(email="root@example.com",
                                                                          password="admin password 1"))
    assert tokens.user.role == user_pb2.ROLE_ADMIN
    assert jwt.decode(tokens.access_token, options={"verify_signature": False})["role"] == "admin"
    # A restart with a new password updates the same account.
    third = await stack_factory(admin_email="root@example.com", admin_password="admin password 2")
    await asyncio.wait_for(third.app.identity.admin_ready.wait(), 10)
    await auth(third.channel).Login(auth_service_pb2.LoginRequest(email="root@example.com",
                                                                 password="admin password 2"))
    assert len(await asyncio.to_thread(run_sql, database_url, "SELECT id FROM users")) == 1


# -- the JWT attack suite --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, key: bytes | None) -> str:
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return signing_input + "." + _b64(signature)


def _attacks(token: str, refresh_token: str) -> dict[str, tuple[str, str]]:
    """name -> (authorization header, expected reason)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    secret = TEST_JWT_SECRET.encode()

    def signed(**changes):
        return jwt.encode({k: v for k, v in (claims | changes).items() if v is not None}, secret, algorithm="HS256")

    header, payload, signature = token.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["role"] = "admin"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return {
        "alg-none": (f"Bearer {_forge({'alg': 'none', 'typ': 'JWT'}, claims, None)}", "TOKEN_INVALID"),
        "alg-none-no-signature": (f"Bearer {_forge({'alg': 'none'}, claims, None).rstrip('.')}.", "TOKEN_INVALID"),
        "other-secret": (f"Bearer {jwt.encode(claims, 'another-secret-of-at-least-32-bytes!!', 'HS256')}",
                         "TOKEN_INVALID"),
        "rs256-header-hmac-signature": (f"Bearer {_forge({'alg': 'RS256', 'typ': 'JWT'}, claims, secret)}",
                                        "TOKEN_INVALID"),
        "real-rs256": (f"Bearer {jwt.encode(claims, rsa_key, algorithm='RS256')}", "TOKEN_INVALID"),
        "wrong-iss": (f"Bearer {signed(iss='someone-else')}", "TOKEN_INVALID"),
        "wrong-aud": (f"Bearer {signed(aud='other')}", "TOKEN_INVALID"),
        "wrong-typ": (f"Bearer {signed(typ='refresh')}", "TOKEN_INVALID"),
        "wrong-role": (f"Bearer {signed(role='root')}", "TOKEN_INVALID"),
        "expired": (f"Bearer {signed(iat=now - 3600, exp=now - 1800)}", "TOKEN_EXPIRED"),
        "tampered-payload": (f"Bearer {header}.{_b64(json.dumps(tampered).encode())}.{signature}", "TOKEN_INVALID"),
        "refresh-token-as-access": (f"Bearer {refresh_token}", "TOKEN_INVALID"),
        "garbage": ("Bearer not.a.jwt", "TOKEN_INVALID"),
        "garbage-symbols": ("Bearer %%%$$$###{}", "TOKEN_INVALID"),
        "garbage-base64-parts": (f"Bearer {_b64(b'{}')}.{_b64(b'[]')}.{_b64(b'x')}", "TOKEN_INVALID"),
        "unknown-scheme": (f"Basic {_b64(b'ada:pw')}", "TOKEN_INVALID"),
        "empty-bearer": ("Bearer ", "TOKEN_INVALID"),
        "missing-sid": (f"Bearer {signed(sid=None)}", "TOKEN_INVALID"),
        "missing-exp": (f"Bearer {signed(exp=None)}", "TOKEN_INVALID"),
        "missing-jti": (f"Bearer {signed(jti=None)}", "TOKEN_INVALID"),
        "missing-typ": (f"Bearer {signed(typ=None)}", "TOKEN_INVALID"),
    }


@SQLITE_ONLY
async def test_jwt_attack_suite_is_rejected_with_the_right_reason(stack_factory):
    stack = await stack_factory()
    tokens = await register(stack.channel, "ada")
    await me(stack.channel, bearer(tokens.access_token))  # the genuine token works
    for name, (header, reason) in _attacks(tokens.access_token, tokens.refresh_token).items():
        try:
            await me(stack.channel, (("authorization", header),))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert details(error)[0].reason == reason, name
        else:
            raise AssertionError(f"{name} was accepted")
    await expect_error(me(stack.channel, ()), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


NO_SUCH_BOT = "00000000-0000-4000-8000-000000000000"


@SQLITE_ONLY
async def test_streaming_rpcs_are_guarded_too(stack_factory):
    stack = await stack_factory()
    bots = bot_service_pb2_grpc.BotServiceStub(stack.channel)

    async def watch(metadata):
        async for _ in bots.WatchBot(bot_service_pb2.WatchBotRequest(id=NO_SUCH_BOT), metadata=metadata):
            pass

    await expect_error(watch(()), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    await expect_error(watch(bearer("garbage")), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    tokens = await register(stack.channel, "ada")
    # Past auth, the RPC itself answers: there is no such bot.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await watch(bearer(tokens.access_token))
    assert (raised.value.code(), details(raised.value)[0].reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


# -- refresh, logout, revocation across replicas -----------------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_session(stack_factory):
    stack = await stack_factory()
    first = await register(stack.channel, "ada")
    refresh = auth(stack.channel).RefreshToken
    second = await refresh(auth_service_pb2.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    await me(stack.channel, bearer(second.access_token))
    third = await refresh(auth_service_pb2.RefreshTokenRequest(refresh_token=second.refresh_token))
    # The first token was rotated away: presenting it again is a theft signal.
    await expect_error(refresh(auth_service_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)),
                       grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    # The whole session is gone: its access tokens and its newest refresh token.
    for access in (first.access_token, second.access_token, third.access_token):
        await expect_error(me(stack.channel, bearer(access)), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    await expect_error(refresh(auth_service_pb2.RefreshTokenRequest(refresh_token=third.refresh_token)),
                       grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
    await expect_error(refresh(auth_service_pb2.RefreshTokenRequest(refresh_token="made-up")),
                       grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
    # Another session of the same user is unaffected.
    other = await auth(stack.channel).Login(auth_service_pb2.LoginRequest(email="ada@example.com",
                                                                         password=PASSWORD))
    await me(stack.channel, bearer(other.access_token))


async def test_logout_is_seen_by_a_second_replica_within_a_second(stack_factory):
    a = await stack_factory()
    b = await stack_factory()
    await asyncio.wait_for(b.app.identity.revocations.listening.wait(), 5)
    tokens = await register(a.channel, "ada")
    await me(b.channel, bearer(tokens.access_token))
    await auth(a.channel).Logout(auth_service_pb2.LogoutRequest(), metadata=bearer(tokens.access_token))
    await expect_error(me(a.channel, bearer(tokens.access_token)), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    took = await eventually(lambda: rejected(b.channel, bearer(tokens.access_token), "TOKEN_REVOKED"), within=1.0)
    assert took < 1.0
    await expect_error(
        auth(b.channel).RefreshToken(auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID",
    )


@SQLITE_ONLY
async def test_a_replica_without_nats_learns_revocations_from_the_database(stack_factory):
    a = await stack_factory()
    cut_off = await stack_factory(nats_url=f"nats://127.0.0.1:{free_port()}", wait_for_nats=False,
                                  revocation_sync_seconds=0.2)
    tokens = await register(a.channel, "ada")
    await me(cut_off.channel, bearer(tokens.access_token))
    await auth(a.channel).Logout(auth_service_pb2.LogoutRequest(), metadata=bearer(tokens.access_token))
    await eventually(lambda: rejected(cut_off.channel, bearer(tokens.access_token), "TOKEN_REVOKED"), within=3.0)
    # A restarted replica loads the revocations before serving.
    restarted = await stack_factory()
    await expect_error(me(restarted.channel, bearer(tokens.access_token)), grpc.StatusCode.UNAUTHENTICATED,
                       "TOKEN_REVOKED")


@SQLITE_ONLY
async def test_logout_needs_a_session_not_an_api_key(stack_factory):
    stack = await stack_factory()
    tokens = await register(stack.channel, "ada")
    created = await keys(stack.channel).CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="cli")),
        metadata=bearer(tokens.access_token))
    await expect_error(auth(stack.channel).Logout(auth_service_pb2.LogoutRequest(),
                                                  metadata=api_key_header(created.secret)),
                       grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")
    await expect_error(auth(stack.channel).Logout(auth_service_pb2.LogoutRequest()),
                       grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


# -- API keys --------------------------------------------------------------------------------------


async def test_api_key_lifecycle_and_secrecy(stack_factory, database_url, capfd, caplog):
    caplog.set_level("DEBUG")
    stack = await stack_factory(api_key_last_used_flush_seconds=0.1)
    tokens = await register(stack.channel, "ada")
    session = bearer(tokens.access_token)
    stub = keys(stack.channel)
    created = await stub.CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="laptop cli")), metadata=session)
    secret = created.secret
    assert secret.startswith("the0_") and len(secret) == 5 + 32 + 6
    assert created.api_key.prefix == secret[:10]
    assert created.api_key.state == api_key_pb2.API_KEY_STATE_ACTIVE
    assert not created.api_key.HasField("last_used_time")

    # Both headers work, with GetCurrentUser and on the streaming RPCs' auth.
    assert (await me(stack.channel, api_key_header(secret))).id == tokens.user.id
    assert (await me(stack.channel, (("x-api-key", secret),))).id == tokens.user.id

    async def used() -> bool:
        listed = await stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=session)
        return listed.api_keys[0].HasField("last_used_time")

    await eventually(used, within=3.0)

    # Bad keys: malformed, bad checksum, well-formed but unknown.
    tampered = secret[:-7] + ("A" if secret[-7] != "A" else "B") + secret[-6:]
    from the0.server.identity.api_key_secrets import new_secret

    for bad in ("nonsense", "the0_" + "x" * 38, tampered, new_secret()):
        await expect_error(me(stack.channel, api_key_header(bad)), grpc.StatusCode.UNAUTHENTICATED,
                           "API_KEY_INVALID")

    # An API key cannot manage keys.
    await expect_error(stub.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="minted")), metadata=api_key_header(secret)),
        grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")
    await expect_error(stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=(("x-api-key", secret),)),
                       grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")

    # Validation and duplicates.
    error = await expect_error(stub.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="ab", expire_time=timestamp_pb2.Timestamp(seconds=1))), metadata=session),
        grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert violations(error) == {"apiKey.name", "apiKey.expireTime"}
    await expect_error(stub.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="laptop cli")), metadata=session),
        grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")

    # Someone else's key is NOT_FOUND, and they never see it.
    bob = bearer((await register(stack.channel, "bob")).access_token)
    await expect_error(stub.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created.api_key.id),
                                         metadata=bob), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert len((await stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=bob)).api_keys) == 0

    # Revoke: soft, idempotent, listed as REVOKED, rejected.
    revoked = await stub.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created.api_key.id),
                                      metadata=session)
    assert revoked.state == api_key_pb2.API_KEY_STATE_REVOKED and revoked.HasField("revoke_time")
    again = await stub.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created.api_key.id), metadata=session)
    assert again.revoke_time == revoked.revoke_time
    await expect_error(me(stack.channel, api_key_header(secret)), grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    listed = await stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=session)
    assert [k.state for k in listed.api_keys] == [api_key_pb2.API_KEY_STATE_REVOKED]

    # The secret is nowhere: not in the database, not in any later response, not in the logs.
    assert secret not in dump_database(database_url)
    assert secret[10:] not in dump_database(database_url)
    assert secret not in str(listed) and secret not in str(revoked)
    out, err = capfd.readouterr()
    assert secret not in out + err + caplog.text
    assert "API_KEY_INVALID" in err or "UNAUTHENTICATED" in err  # the access log did run


async def test_api_key_revocation_is_seen_by_a_second_replica_within_a_second(stack_factory):
    a = await stack_factory()
    b = await stack_factory()
    await asyncio.wait_for(b.app.identity.revocations.listening.wait(), 5)
    session = bearer((await register(a.channel, "ada")).access_token)
    created = await keys(a.channel).CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="cli")), metadata=session)
    await me(b.channel, api_key_header(created.secret))  # now cached on B
    await keys(a.channel).RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created.api_key.id),
                                       metadata=session)
    took = await eventually(lambda: rejected(b.channel, api_key_header(created.secret), "API_KEY_INVALID"),
                            within=1.0)
    assert took < 1.0


@SQLITE_ONLY
async def test_expired_api_keys_are_rejected_and_listed_as_expired(stack_factory):
    stack = await stack_factory()
    session = bearer((await register(stack.channel, "ada")).access_token)
    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
    created = await keys(stack.channel).CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="short-lived", expire_time=soon)), metadata=session)
    await me(stack.channel, api_key_header(created.secret))
    await asyncio.sleep(1.1)
    await expect_error(me(stack.channel, api_key_header(created.secret)), grpc.StatusCode.UNAUTHENTICATED,
                       "API_KEY_INVALID")
    listed = await keys(stack.channel).ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=session)
    assert listed.api_keys[0].state == api_key_pb2.API_KEY_STATE_EXPIRED


async def test_api_keys_are_listed_newest_first_in_signed_pages(stack_factory):
    stack = await stack_factory()
    session = bearer((await register(stack.channel, "ada")).access_token)
    stub = keys(stack.channel)
    for i in range(5):
        await stub.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name=f"key-{i}")),
                                metadata=session)
    names, token = [], ""
    while True:
        page = await stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(page_size=2, page_token=token),
                                      metadata=session)
        names += [k.name for k in page.api_keys]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"key-{i}" for i in reversed(range(5))]
    await expect_error(stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(page_token="forged"),
                                        metadata=session), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    await expect_error(stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(page_size=-1), metadata=session),
                       grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    # Bob cannot continue Ada's listing with her token.
    first = await stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(page_size=2), metadata=session)
    bob = bearer((await register(stack.channel, "bob")).access_token)
    await expect_error(stub.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(page_token=first.next_page_token),
                                        metadata=bob), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


@SQLITE_ONLY
async def test_current_user_cache_is_evicted_by_a_login_on_this_replica(stack_factory):
    stack = await stack_factory()
    registered = await register(stack.channel, "cacher")
    first = await me(stack.channel, bearer(registered.access_token))  # now cached
    await asyncio.sleep(0.01)
    logged_in = await auth(stack.channel).Login(
        auth_service_pb2.LoginRequest(email="cacher@example.com", password=PASSWORD)
    )
    second = await me(stack.channel, bearer(logged_in.access_token))
    assert second.last_login_time.ToDatetime() > first.last_login_time.ToDatetime()
