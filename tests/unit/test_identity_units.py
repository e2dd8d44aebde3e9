"""Identity building blocks without a server: secrets, tokens, passwords, throttling, policies, settings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import bcrypt
import pytest
from argon2 import PasswordHasher

from the0.api_key.v1 import api_key_service_pb2
from the0.auth.v1 import auth_service_pb2
from the0.bot.v1 import bot_service_pb2
from the0.server.app import _ALL_API_SERVICES
from the0.server.errors import Unauthenticated
from the0.server.identity import api_key_secrets
from the0.server.identity.passwords import OWASP_MEMORY_KIB, OWASP_TIME_COST, Passwords
from the0.server.identity.servicers import client_address
from the0.server.identity.tokens import AccessTokens
from the0.server.interceptors.auth import (
    ANY_CREDENTIAL,
    PUBLIC,
    USER_SESSION,
    AuthInterceptor,
    policies_from_services,
)
from the0.server.keys import KeyRing, key_ring
from the0.server.settings import Settings, SettingsError

SECRET = "unit-test-secret-of-at-least-thirty-two-bytes"
ENV = {"JWT_SECRET": SECRET, "THE0_SECRETS_KEY": f"s1:{SECRET}", "THE0_MAILER_KEY": f"m1:{SECRET}", "DATABASE_URL": "sqlite:///x.db", "NATS_URL": "nats://127.0.0.1:4222"}


def ring(secret: str) -> KeyRing:
    return key_ring((), secret)


def test_api_key_secrets_are_well_formed_and_checksummed():
    secrets = {api_key_secrets.new_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert secret.startswith("the0_") and len(secret) == 43 and secret[5:].isalnum()
        assert api_key_secrets.is_well_formed(secret)
    secret = secrets.pop()
    flipped = secret[:10] + ("a" if secret[10] != "a" else "b") + secret[11:]
    assert not api_key_secrets.is_well_formed(flipped)
    assert not api_key_secrets.is_well_formed(secret + "x")
    assert not api_key_secrets.is_well_formed("ghp_" + secret[4:])
    assert api_key_secrets.display_prefix(secret) == secret[:10]


def test_api_key_hash_is_keyed_by_the_server_secret():
    secret = api_key_secrets.new_secret()
    one, other = api_key_secrets.ApiKeyHasher(ring(SECRET)), api_key_secrets.ApiKeyHasher(ring(SECRET + "x"))
    assert one.hash(secret) == one.hash(secret) != other.hash(secret)
    assert secret not in one.hash(secret)


def test_access_tokens_round_trip_and_expire():
    tokens = AccessTokens(ring(SECRET), timedelta(minutes=15))
    token, expires = tokens.issue(user_id="u1", session_id="s1", role="admin")
    claims = tokens.verify(token)
    assert (claims.user_id, claims.session_id, claims.role, claims.expires_at) == ("u1", "s1", "admin", expires)
    old, _ = tokens.issue(user_id="u1", session_id="s1", role="user", now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(Unauthenticated) as raised:
        tokens.verify(old)
    assert raised.value.reason == "TOKEN_EXPIRED"
    with pytest.raises(Unauthenticated) as raised:
        AccessTokens(ring(SECRET + "x"), timedelta(minutes=15)).verify(token)
    assert raised.value.reason == "TOKEN_INVALID"
    # A token verified before (cached) still expires on time.
    short = AccessTokens(ring(SECRET), timedelta(minutes=15))
    token, _ = short.issue(user_id="u1", session_id="s1", role="user",
                           now=datetime.now(UTC) - timedelta(minutes=15) + timedelta(seconds=1))
    short.verify(token)
    short._verified[token] = dataclasses.replace(short._verified[token],
                                                 expires_at=datetime.now(UTC) - timedelta(seconds=10))
    with pytest.raises(Unauthenticated) as raised:
        short.verify(token)
    assert raised.value.reason == "TOKEN_EXPIRED"


async def test_bcrypt_verifies_and_asks_for_a_rehash():
    passwords = Passwords(memory_kib=1024, time_cost=1)
    for prefix in ("$2a$", "$2b$", "$2y$"):
        stored = bcrypt.hashpw(b"hunter22", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", prefix, 1)
        assert (await passwords.verify(stored, "hunter22")).needs_rehash
        assert not (await passwords.verify(stored, "hunter23")).ok
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("hunter22")
    strong = Passwords()
    result = await strong.verify(weak, "hunter22")
    assert result.ok and result.needs_rehash
    assert not (await strong.verify("not a hash", "hunter22")).ok


async def test_default_password_hashes_meet_owasp():
    stored = await Passwords().hash("hunter22")
    assert stored.startswith("$argon2id$")
    params = dict(p.split("=") for p in stored.split("$")[3].split(","))
    assert int(params["m"]) >= 19 * 1024 and int(params["t"]) >= 2 and int(params["p"]) == 1
    settings = Settings.from_env(ENV)
    assert (settings.argon2_memory_kib, settings.argon2_time_cost) == (OWASP_MEMORY_KIB, OWASP_TIME_COST)


class _Context:
    def __init__(self, peer: str, *forwarded: str) -> None:
        self._peer, self._metadata = peer, tuple(("x-forwarded-for", f) for f in forwarded)

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_client_address_believes_x_forwarded_for_only_from_trusted_proxies():
    loopback = Settings().trusted_proxies  # 127.0.0.0/8 and ::1
    def address(peer: str, *forwarded: str, trusted=loopback) -> str:
        return client_address(_Context(peer, *forwarded), trusted)  # type: ignore[arg-type]

    assert address("ipv4:192.0.2.7:5555", "203.0.113.1") == "192.0.2.7"  # not a proxy: its own address
    assert address("ipv4:127.0.0.1:5555", "203.0.113.1") == "203.0.113.1"  # Envoy's appended entry
    # The right-most untrusted entry: the client's own first entries are ignored.
    assert address("ipv4:127.0.0.1:5555", "198.51.100.1, 203.0.113.1") == "203.0.113.1"
    assert address("ipv4:127.0.0.1:5555", "198.51.100.1", "203.0.113.1, 127.0.0.2") == "203.0.113.1"
    assert address("ipv6:[::1]:5555", "2001:db8::5") == "2001:db8::5"
    assert address("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert address("ipv4:127.0.0.1:5555", "127.0.0.3") == "127.0.0.3"  # every hop trusted: the furthest
    assert address("ipv4:127.0.0.1:5555", "junk, 127.0.0.3") == "127.0.0.3"  # cannot name who wrote junk
    assert address("ipv6:[::ffff:192.0.2.7]:1", "203.0.113.1") == "192.0.2.7"
    assert address("unix:/tmp/sock", "203.0.113.1") == "unknown"
    assert address("ipv4:127.0.0.1:5555", "203.0.113.1", trusted=()) == "127.0.0.1"


def test_auth_policies_come_from_the_proto():
    policies = policies_from_services(_ALL_API_SERVICES)
    interceptor = AuthInterceptor(policies, authenticator=None)  # type: ignore[arg-type]
    auth = "/the0.auth.v1.AuthService/"
    assert interceptor.policy(auth + "Login") == PUBLIC
    assert interceptor.policy(auth + "Register") == PUBLIC
    assert interceptor.policy(auth + "RefreshToken") == PUBLIC
    assert interceptor.policy(auth + "Logout") == USER_SESSION
    assert interceptor.policy(auth + "GetCurrentUser") == ANY_CREDENTIAL
    assert interceptor.policy("/the0.api_key.v1.ApiKeyService/CreateApiKey") == USER_SESSION
    assert interceptor.policy("/the0.bot.v1.BotService/WatchBot") == ANY_CREDENTIAL
    assert interceptor.policy("/the0.health.v1.HealthService/GetHealth") == PUBLIC
    assert interceptor.policy("/grpc.health.v1.Health/Check") == PUBLIC
    assert interceptor.policy("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == PUBLIC
    assert interceptor.policy("/the0.bot.v1.BotService/Nope") is None
    assert interceptor.policy("/evil.Service/Method") is None
    every = {f"/{s.full_name}/{m.name}" for s in (auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
             api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"],
             bot_service_pb2.DESCRIPTOR.services_by_name["BotService"]) for m in s.methods}
    assert every <= policies.keys()


def test_settings_for_identity():
    settings = Settings.from_env(ENV | {"THE0_REGISTRATION_ENABLED": "false", "THE0_ADMIN_EMAIL": " Root@X.io ",
                                        "THE0_ADMIN_PASSWORD": "long enough", "THE0_LOGIN_ATTEMPTS_PER_ACCOUNT_ADDRESS": "3",
                                        "THE0_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"})
    assert not settings.registration_enabled
    assert settings.admin_email == "root@x.io" and settings.login_attempts_per_account_address == 3
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]
    assert [str(n) for n in Settings.from_env(ENV).trusted_proxies] == ["127.0.0.0/8", "::1/128"]
    assert "long enough" not in repr(settings)
    assert Settings.from_env(ENV).registration_enabled
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(ENV | {"THE0_ADMIN_EMAIL": "root@x.io", "THE0_LOGIN_ATTEMPTS_PER_ADDRESS": "-1",
                                 "THE0_TRUSTED_PROXIES": "envoy.local"})
    assert any("THE0_ADMIN_PASSWORD" in p for p in raised.value.problems)
    assert any("THE0_LOGIN_ATTEMPTS_PER_ADDRESS" in p for p in raised.value.problems)
    assert any("THE0_TRUSTED_PROXIES" in p for p in raised.value.problems)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({k: v for k, v in ENV.items() if k != "JWT_SECRET"})
    assert any("JWT_SECRET is required" in p for p in raised.value.problems)


def test_profile_cache_expires_after_five_seconds_and_stays_bounded():
    from cachetools import TTLCache

    from the0.server.identity.service import PROFILE_CACHE_ENTRIES, PROFILE_CACHE_SECONDS

    assert (PROFILE_CACHE_SECONDS, PROFILE_CACHE_ENTRIES) == (5.0, 10_000)
    now = [0.0]
    # The service's cache with a fake clock and a bound of two.
    cache: TTLCache[str, str] = TTLCache(maxsize=2, ttl=PROFILE_CACHE_SECONDS, timer=lambda: now[0])
    cache["a"] = "alice"
    assert cache.get("a") == "alice"
    now[0] = 5.0
    assert cache.get("a") is None  # expired
    cache["a"] = "alice"
    cache["b"] = "bob"
    cache["c"] = "carol"  # over the bound: the least recently used goes, it never grows
    assert len(cache) == 2 and cache.get("a") is None and cache.get("c") == "carol"
    cache.pop("c", None)  # what a login does
    assert cache.get("c") is None
