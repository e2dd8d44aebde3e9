"""Secret config fields (writeOnly in the custom bot's schema) on a real database: sealed at rest,
never returned, evented or echoed; kept on update; rotated by rotate_secrets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import orjson
import pytest
from sqlalchemy import text

from tests.fixtures.server import TEST_SECRETS_KEYS
from tests.integration.test_bots_support import (
    add_custom_bot,
    add_user,
    bot_config,
    bots_domain,
    outbox_events,
)
from the0.server.bots.secret_rotation import rotate_secrets
from the0.server.errors import ApiError
from the0.server.keys import KeyRing
from the0.server.secrets.box import PLACEHOLDER, ConfigSecrets
from the0.server.secrets.fields import secret_paths
from the0.server.settings import Settings, SettingsError

API_KEY = "sk-live-9f8e7d6c5b4a"
API_SECRET = "exchange-secret-0a1b2c3d4e5f"
SECRET_SCHEMA = {
    "type": "object",
    "properties": {
        "symbol": {"type": "string"},
        "quantity": {"type": "integer"},
        "apiKey": {"type": "string", "writeOnly": True, "pattern": "^sk-", "minLength": 8},
        "exchange": {
            "type": "object",
            "properties": {"secret": {"$ref": "#/$defs/password"}, "venue": {"type": "string"}},
        },
    },
    "$defs": {"password": {"type": "string", "format": "password", "maxLength": 64}},
    "required": ["symbol", "apiKey"],
    "additionalProperties": False,
}


def config(**extra):
    base = bot_config(apiKey=API_KEY, exchange={"secret": API_SECRET, "venue": "kraken"})
    return base | extra


@pytest.fixture
async def domain(database_url):
    async with bots_domain(database_url) as domain:
        yield domain


@pytest.fixture
async def alice(domain):
    user = await add_user(domain.sessions)
    await add_custom_bot(domain.sessions, user, schema=SECRET_SCHEMA)
    return user


async def raw_bot(domain, bot_id: str) -> tuple[str, dict]:
    """Every column of the row as the database holds it, and the stored config."""
    async with domain.sessions() as session:
        row = (await session.execute(text(
            "SELECT id, owner_id, name, CAST(config AS TEXT), state, custom_bot_id, etag, error, "
            "CAST(last_execution AS TEXT) FROM bots WHERE id = :id"), {"id": bot_id})).one()
    return repr(tuple(row)), orjson.loads(row[3])


async def opened(domain, bot_id: str) -> dict:
    _, stored = await raw_bot(domain, bot_id)
    return domain.service._secrets.reveal(bot_id, stored, SECRET_SCHEMA)


async def api_error(awaitable) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await awaitable
    return caught.value


def everything(error: ApiError) -> str:
    return repr((error.message, error.metadata, [(v.field, v.description) for v in error.violations]))


def test_secret_paths_from_the_schema():
    assert secret_paths(SECRET_SCHEMA) == {("apiKey",), ("exchange", "secret")}
    assert secret_paths({"type": "object"}) == frozenset()
    looped = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "properties": {"x": {"$ref": "#/$defs/a"}}}
    assert secret_paths(looped) == frozenset()


async def test_a_secret_is_sealed_at_rest_and_never_shown(domain, alice, caplog):
    caplog.set_level("DEBUG")
    bot = await domain.service.create(alice, name="b", config=config())
    assert bot.config["apiKey"] == PLACEHOLDER
    assert bot.config["exchange"] == {"secret": PLACEHOLDER, "venue": "kraken"}
    shown = [bot, await domain.service.get(alice, bot.id),
             *(await domain.service.list(alice, state=None, requested_page_size=10, page_token="")).bots]
    updated = await domain.service.update(alice, bot.id, name="renamed", config=None)
    deployed = await domain.service.deploy(alice, bot.id)
    shown += [updated, deployed]
    stored, _ = await raw_bot(domain, bot.id)
    events = orjson.dumps([e.data for e in await outbox_events(domain.sessions, bot.id)]).decode()
    for secret in (API_KEY, API_SECRET):
        assert all(secret not in repr(b) for b in shown)
        assert secret not in stored
        assert secret not in events
        assert secret not in caplog.text
    assert "the0-secret:v1:test1:" in stored
    assert "the0-secret" not in events and PLACEHOLDER in events
    revealed = await opened(domain, bot.id)
    assert (revealed["apiKey"], revealed["exchange"]["secret"]) == (API_KEY, API_SECRET)


async def test_update_keeps_omitted_or_placeholder_secrets_and_replaces_given_ones(domain, alice):
    bot = await domain.service.create(alice, name="b", config=config())
    omitted = {k: v for k, v in config().items() if k != "apiKey"} | {"exchange": {"venue": "binance"}}
    await domain.service.update(alice, bot.id, name=None, config=omitted)
    found = await opened(domain, bot.id)
    assert (found["apiKey"], found["exchange"]) == (API_KEY, {"secret": API_SECRET, "venue": "binance"})

    shown = (await domain.service.get(alice, bot.id)).config
    await domain.service.update(alice, bot.id, name=None, config=shown | {"quantity": 5})
    found = await opened(domain, bot.id)
    assert (found["apiKey"], found["exchange"]["secret"], found["quantity"]) == (API_KEY, API_SECRET, 5)

    await domain.service.update(alice, bot.id, name=None, config=config(apiKey="sk-new-value-1"))
    assert (await opened(domain, bot.id))["apiKey"] == "sk-new-value-1"


async def test_a_placeholder_with_nothing_stored_is_refused(domain, alice):
    error = await api_error(domain.service.create(alice, name="b", config=config(apiKey=PLACEHOLDER)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert [v.field for v in error.violations] == ["config.apiKey"]


async def test_a_validation_error_on_a_secret_does_not_echo_it(domain, alice):
    bad_key = "pk-wrong-prefix-secret-123"
    bad_secret = "s" * 65 + "-unique-secret"
    error = await api_error(domain.service.create(
        alice, name="b", config=config(apiKey=bad_key, exchange={"secret": bad_secret, "venue": 7})
    ))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    fields = {v.field: v.description for v in error.violations}
    assert set(fields) == {"config.apiKey", "config.exchange.secret", "config.exchange.venue"}
    assert "'pattern'" in fields["config.apiKey"]
    assert bad_key not in everything(error) and "s" * 60 not in everything(error)
    # Not a secret: its message may quote it.
    assert "7" in fields["config.exchange.venue"]
    # A rule on the object that holds a secret quotes the whole object: refused by name too.
    schema = SECRET_SCHEMA | {"not": {"required": ["quantity"]}}
    await add_custom_bot(domain.sessions, alice, version="2.0.0", schema=schema)
    error = await api_error(domain.service.create(alice, name="b", config=config(version="2.0.0")))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert API_KEY not in everything(error) and "'not'" in everything(error)


async def test_rotation_reseals_under_the_current_key_so_the_old_one_can_go(domain, alice):
    bot = await domain.service.create(alice, name="b", config=config())
    etag = (await domain.service.get(alice, bot.id)).etag
    (old_kid, old), new = TEST_SECRETS_KEYS[0], ("test2", "a-brand-new-secrets-key-of-32-bytes-or-more")
    both = ConfigSecrets(KeyRing("test2", ((new[0], new[1].encode()), (old_kid, old.encode()))))
    report = await rotate_secrets(domain.sessions, both)
    assert (report.values_resealed, report.unreadable) == (2, ())
    stored, _ = await raw_bot(domain, bot.id)
    assert "the0-secret:v1:test2:" in stored and "the0-secret:v1:test1:" not in stored
    assert (await domain.service.get(alice, bot.id)).etag == etag
    only_new = ConfigSecrets(KeyRing("test2", ((new[0], new[1].encode()),)))
    _, config_now = await raw_bot(domain, bot.id)
    assert only_new.reveal(bot.id, config_now, SECRET_SCHEMA)["apiKey"] == API_KEY
    again = await rotate_secrets(domain.sessions, only_new)
    assert (again.values_resealed, again.unreadable) == (0, ())


def test_the_secrets_key_comes_from_the_environment_and_is_required_outside_dev_mode():
    base = {"JWT_SECRET": "j" * 32, "DATABASE_URL": "postgresql://u@db/the0", "NATS_URL": "nats://n:4222",
            "THE0_MAILER_KEY": "m1:" + "m" * 32}
    key = "k" * 32
    settings = Settings.from_env(base | {"THE0_SECRETS_KEY": f"new:{key}, old:{'o' * 32}"})
    assert settings.secrets_keys == (("new", key), ("old", "o" * 32)) and key not in repr(settings)
    for env, problem in (({}, "THE0_SECRETS_KEY is required outside dev mode"),
                         ({"THE0_SECRETS_KEY": "s1:short"}, "THE0_SECRETS_KEY key 's1' must be at least 32")):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env(base | env)
        assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems
    assert Settings.from_env({}, dev_mode=True).secrets_keys == ()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_rotate_secrets_command(database_url, domain, alice):
    bot = await domain.service.create(alice, name="b", config=config())
    (old_kid, old), new = TEST_SECRETS_KEYS[0], "n" * 40
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_"))}
    # Only what it uses: no NATS, JWT or mailer key (as `migrate` needs only the database).
    env |= {"DATABASE_URL": database_url, "THE0_SECRETS_KEY": f"fresh:{new},{old_kid}:{old}"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "the0.server", "rotate-secrets"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2 secret value(s) of 1 bot(s) resealed under key 'fresh'" in done.stdout
    assert "TOTP secret(s) of" in done.stdout  # the users' half (tests/e2e/test_two_factor_rotation.py)
    assert all(secret not in done.stdout + done.stderr for secret in (API_KEY, API_SECRET, new, old))
    stored, config_now = await raw_bot(domain, bot.id)
    assert "the0-secret:v1:fresh:" in stored
    fresh_only = ConfigSecrets(KeyRing("fresh", (("fresh", new.encode()),)))
    assert fresh_only.reveal(bot.id, config_now, SECRET_SCHEMA)["apiKey"] == API_KEY
    # The old key gone before its values were resealed: named, not opened, exit 1.
    env["THE0_SECRETS_KEY"] = "other:" + "o" * 40
    failed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "the0.server", "rotate-secrets"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert failed.returncode == 1 and bot.id in failed.stderr, failed.stderr
    # Without the key: one line naming it, exit 2.
    del env["THE0_SECRETS_KEY"]
    missing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "the0.server", "rotate-secrets"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 2, missing.stderr
    assert "THE0_SECRETS_KEY is required" in missing.stderr and "Traceback" not in missing.stderr, missing.stderr
