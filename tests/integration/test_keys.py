"""One key per purpose, each rotatable: JWTs (kid), API-key hashing, page tokens; JWT_SECRET still works.

Each "deployment" is a replica started on the same database with another key
configuration, as an operator would restart replicas one by one while rotating.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import jwt
import pytest

from tests.fixtures.server import TEST_JWT_SECRET, Stack, StackFactory
from tests.integration.test_stream_credentials import bearer, reason_of, register
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.server.settings import Settings, SettingsError

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
K1, K2 = "jwt-key-one-of-at-least-thirty-two-bytes!!", "jwt-key-two-of-at-least-thirty-two-bytes!!"
H1, H2 = "hash-key-one-of-at-least-thirty-two-bytes!", "hash-key-two-of-at-least-thirty-two-bytes!"
P1, P2 = "page-key-one-of-at-least-thirty-two-bytes!", "page-key-two-of-at-least-thirty-two-bytes!"


def keys(jwt_keys: Any = (("k1", K1),), hash_keys: Any = (("h1", H1),), page_keys: Any = (("p1", P1),),
         jwt_secret: str | None = None) -> dict[str, Any]:
    return {"jwt_keys": jwt_keys, "api_key_hash_keys": hash_keys, "page_token_keys": page_keys,
            "jwt_secret": jwt_secret}


async def whoami(stack: Stack, metadata: list[tuple[str, str]]) -> tuple[grpc.StatusCode, str]:
    try:
        await auth_service_pb2_grpc.AuthServiceStub(stack.channel).GetCurrentUser(
            auth_service_pb2.GetCurrentUserRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code(), reason_of(error)
    return grpc.StatusCode.OK, ""


async def new_api_key(stack: Stack, token: str, name: str = "") -> list[tuple[str, str]]:
    name = name or f"key {uuid.uuid4().hex[:8]}"
    created = await api_key_service_pb2_grpc.ApiKeyServiceStub(stack.channel).CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name=name)), metadata=bearer(token))
    return [("authorization", f"ApiKey {created.secret}")]


OK = (grpc.StatusCode.OK, "")


@SQLITE_ONLY
async def test_jwt_keys_rotate_without_logging_anybody_out(stack_factory: StackFactory) -> None:
    old = await stack_factory(**keys())
    token = await register(old)
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    # Step 1 of a rotation: the new key is current, the old one still verifies.
    rotated = await stack_factory(**keys(jwt_keys=(("k2", K2), ("k1", K1))))
    assert await whoami(rotated, bearer(token)) == OK
    fresh = await register(rotated)
    assert jwt.get_unverified_header(fresh)["kid"] == "k2"
    assert await whoami(old, bearer(fresh)) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    # Step 2: the old key is removed; its tokens are refused, the new ones are not.
    retired = await stack_factory(**keys(jwt_keys=(("k2", K2),)))
    assert await whoami(retired, bearer(token)) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    assert await whoami(retired, bearer(fresh)) == OK


@SQLITE_ONLY
async def test_rotating_the_jwt_key_leaves_api_keys_valid(stack_factory: StackFactory) -> None:
    before = await stack_factory(**keys())
    api_key = await new_api_key(before, await register(before))
    after = await stack_factory(**keys(jwt_keys=(("k2", K2),)))  # a leaked JWT key, replaced
    assert await whoami(after, api_key) == OK


@SQLITE_ONLY
async def test_api_keys_hashed_with_an_older_hash_key_still_verify(stack_factory: StackFactory) -> None:
    before = await stack_factory(**keys())
    token = await register(before)
    old_key = await new_api_key(before, token, "old")
    rotated = await stack_factory(**keys(hash_keys=(("h2", H2), ("h1", H1))))
    assert await whoami(rotated, old_key) == OK
    new_key = await new_api_key(rotated, token, "new")
    assert await whoami(rotated, new_key) == OK
    # The new key is hashed with h2: a replica that only knows h1 cannot find it.
    assert await whoami(before, new_key) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    retired = await stack_factory(**keys(hash_keys=(("h2", H2),)))
    assert await whoami(retired, old_key) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    assert await whoami(retired, new_key) == OK


@SQLITE_ONLY
async def test_jwt_secret_alone_still_works_and_joins_every_ring(stack_factory: StackFactory) -> None:
    legacy = await stack_factory()  # the test settings: JWT_SECRET only, as before key rings
    token = await register(legacy)
    api_key = await new_api_key(legacy, token)
    # Moving to separate keys while keeping JWT_SECRET: what it made keeps working.
    moved = await stack_factory(**keys(jwt_secret=TEST_JWT_SECRET))
    assert await whoami(moved, bearer(token)) == OK
    assert await whoami(moved, api_key) == OK
    assert jwt.get_unverified_header(await register(moved))["kid"] == "k1"
    # A token made before key ids (no kid header) is tried against each key.
    claims = jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"], audience="the0")
    no_kid = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
    assert "kid" not in jwt.get_unverified_header(no_kid)
    assert await whoami(moved, bearer(no_kid)) == OK


async def list_page(stack: Stack, token: str, page_token: str = "") -> api_key_service_pb2.ListApiKeysResponse:
    return await api_key_service_pb2_grpc.ApiKeyServiceStub(stack.channel).ListApiKeys(
        api_key_service_pb2.ListApiKeysRequest(page_size=1, page_token=page_token), metadata=bearer(token))


@SQLITE_ONLY
async def test_a_page_token_is_bound_to_its_caller(stack_factory: StackFactory) -> None:
    stack = await stack_factory(**keys())
    alice, bob = await register(stack), await register(stack)
    for token in (alice, alice, bob, bob):
        await new_api_key(stack, token)
    first = await list_page(stack, alice)
    assert first.next_page_token
    assert len((await list_page(stack, alice, first.next_page_token)).api_keys) == 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_page(stack, bob, first.next_page_token)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "INVALID_PAGE_TOKEN"


@SQLITE_ONLY
async def test_page_token_keys_rotate(stack_factory: StackFactory) -> None:
    old = await stack_factory(**keys())
    token = await register(old)
    for _ in range(3):
        await new_api_key(old, token)
    issued_by_old = (await list_page(old, token)).next_page_token
    rotated = await stack_factory(**keys(page_keys=(("p2", P2), ("p1", P1))))
    assert len((await list_page(rotated, token, issued_by_old)).api_keys) == 1
    retired = await stack_factory(**keys(page_keys=(("p2", P2),)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_page(retired, token, issued_by_old)
    assert reason_of(raised.value) == "INVALID_PAGE_TOKEN"


# -- settings ------------------------------------------------------------------------------------

BASE = {"THE0_SECRETS_KEY": "s1:" + "s" * 32, "THE0_MAILER_KEY": "m1:" + "m" * 32, "DATABASE_URL": "postgresql://u@db/the0", "NATS_URL": "nats://nats:4222"}


def test_key_rings_from_the_environment() -> None:
    settings = Settings.from_env(BASE | {"THE0_JWT_KEYS": f"k2:{K2}, k1:{K1}", "THE0_API_KEY_HASH_KEYS": f"h1:{H1}",
                                         "THE0_PAGE_TOKEN_KEYS": f"p1:{P1}"})
    assert settings.jwt_keys == (("k2", K2), ("k1", K1))
    assert settings.jwt_secret is None
    assert K2 not in repr(settings) and H1 not in repr(settings)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"THE0_JWT_KEYS": f"k1:{K1}"}, "THE0_API_KEY_HASH_KEYS is required unless JWT_SECRET is set"),
        ({"THE0_JWT_KEYS": "k1:short", "JWT_SECRET": K1}, "THE0_JWT_KEYS key 'k1' must be at least 32 bytes"),
        ({"THE0_JWT_KEYS": f"k1:{K1},k1:{K2}", "JWT_SECRET": K1}, "THE0_JWT_KEYS key id 'k1' is used twice"),
        ({"THE0_PAGE_TOKEN_KEYS": K1, "JWT_SECRET": K1}, "THE0_PAGE_TOKEN_KEYS entry 1 must be kid:secret"),
        ({}, "JWT_SECRET is required outside dev mode"),
    ],
)
def test_key_ring_problems_name_the_variable_never_the_secret(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(BASE | env)
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems
    assert not any(secret in str(raised.value) for secret in (K1, K2, "short"))
