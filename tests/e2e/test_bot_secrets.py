"""Secret bot config fields end to end: gRPC and REST through Envoy, JetStream events, logs, the database.

A custom bot whose schema marks ``apiKey`` writeOnly; the key sent at create must never come back in
any response (Create/Get/List/Watch/Update, REST), any event read back from JetStream, any log line,
or any column of the bots table in clear.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import orjson
import pytest
from google.protobuf import field_mask_pb2, json_format
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import text

from tests.e2e.test_bots import create, next_bot, register, rpc_error, struct
from tests.integration.test_bot_secrets import SECRET_SCHEMA
from tests.integration.test_bots_support import add_custom_bot, bot_config
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.server.db.engine import create_engine, session_factory
from the0.server.secrets.box import PLACEHOLDER

API_KEY = "sk-live-" + uuid.uuid4().hex
EXCHANGE_SECRET = "xs-" + uuid.uuid4().hex


@pytest.fixture
async def sessions(database_url):
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def secret_config(**extra):
    return bot_config(apiKey=API_KEY, exchange={"secret": EXCHANGE_SECRET, "venue": "kraken"}) | extra


def bad_secrets():
    """Both secrets break a rule whose jsonschema message quotes the value (pattern, maxLength 64)."""
    return secret_config(apiKey="no-" + API_KEY, exchange={"secret": EXCHANGE_SECRET * 2, "venue": "kraken"})


async def bot_events(nats_client, durable: str):
    js = nats_client.jetstream()
    async with asyncio.timeout(10):
        while True:
            try:
                await js.stream_info("THE0_EVENTS")
                break
            except Exception:  # noqa: BLE001 - the server creates the stream at start-up
                await asyncio.sleep(0.1)
    return await js.pull_subscribe(
        "the0.bot.>", durable=durable, stream="THE0_EVENTS",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )


async def drain(subscription, bot_id: str, *, until: str) -> list[dict]:
    seen: list[dict] = []
    async with asyncio.timeout(15):
        while not any(e["type"] == until for e in seen):
            try:
                messages = await subscription.fetch(20, timeout=0.5)
            except TimeoutError:
                continue
            for message in messages:
                await message.ack()
                event = orjson.loads(message.data)
                if event["data"].get("botId") == bot_id:
                    seen.append(event)
    return seen


async def test_a_secret_never_leaves_the_server(stack_factory, sessions, nats_client, caplog):
    caplog.set_level("DEBUG")
    stack = await stack_factory(envoy=True)
    alice = await register(stack.channel)
    await add_custom_bot(sessions, alice.id, schema=SECRET_SCHEMA)
    events = await bot_events(nats_client, f"secrets-{uuid.uuid4().hex[:8]}")
    shown: list[str] = []

    created = await create(alice, config=secret_config())
    shown.append(str(created))
    assert json_format.MessageToDict(created.config)["apiKey"] == PLACEHOLDER
    metadata = alice.metadata
    shown.append(str(await alice.bots.GetBot(bot_service_pb2.GetBotRequest(id=created.id), metadata=metadata)))
    shown.append(str(await alice.bots.ListBots(bot_service_pb2.ListBotsRequest(), metadata=metadata)))
    watch = alice.bots.WatchBot(bot_service_pb2.WatchBotRequest(id=created.id), metadata=metadata)
    shown.append(str(await next_bot(watch)))

    # Sent back as shown (placeholders), with another change: the secrets are kept.
    shown_config = json_format.MessageToDict(created.config) | {"quantity": 3}
    updated = await alice.bots.UpdateBot(bot_service_pb2.UpdateBotRequest(
        bot=bot_pb2.Bot(id=created.id, config=struct(shown_config)),
        update_mask=field_mask_pb2.FieldMask(paths=["config"])), metadata=metadata)
    shown += [str(updated), str(await next_bot(watch))]
    watch.cancel()
    await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=created.id), metadata=metadata)

    headers = {"authorization": f"Bearer {alice.token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        rest_created = await http.post("/api/bots", json={"name": "rest", "config": secret_config()})
        assert rest_created.status_code == 200, rest_created.text
        assert rest_created.json()["config"]["exchange"]["secret"] == PLACEHOLDER
        shown += [rest_created.text, (await http.get(f"/api/bots/{created.id}")).text,
                  (await http.get("/api/bots")).text]
        refused = await http.post("/api/bots", json={"name": "bad", "config": bad_secrets()})
        assert refused.status_code == 400 and "CONFIG_INVALID" in refused.text
        shown.append(refused.text)
    error = await rpc_error(create(alice, config=bad_secrets()))
    assert error[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert error[3] == ["config.apiKey", "config.exchange.secret"]

    seen = await drain(events, created.id, until="bot.deploy-requested")
    assert [e["type"] for e in seen] == ["bot.created", "bot.updated", "bot.deploy-requested"]
    assert seen[-1]["data"]["config"]["apiKey"] == PLACEHOLDER and seen[-1]["data"]["config"]["quantity"] == 3
    async with sessions() as session:
        table = "\n".join(repr(tuple(row)) for row in await session.execute(text(
            "SELECT id, owner_id, name, CAST(config AS TEXT), state, custom_bot_id, etag, error, "
            "CAST(last_execution AS TEXT) FROM bots")))
        outbox = "\n".join(repr(tuple(row)) for row in await session.execute(text(
            "SELECT CAST(data AS TEXT) FROM event_outbox")))
    places = {"responses": "\n".join(shown), "events": orjson.dumps(seen).decode(), "logs": caplog.text,
              "bots table": table, "outbox": outbox}
    for where, content in places.items():
        for secret in (API_KEY, EXCHANGE_SECRET):
            assert secret not in content, where
    assert table.count("the0-secret:v1:") == 4  # two bots, two secret fields each


RUNTIME_KEY = "runtime-key-of-at-least-thirty-two-characters"


async def test_only_the_runtimes_deployment_holds_the_secret_and_it_is_audited(stack_factory, sessions):
    from the0.platform.v1 import platform_service_pb2, platform_service_pb2_grpc

    stack = await stack_factory(service_accounts=(("runtime", "runtime-1", RUNTIME_KEY),))
    alice = await register(stack.channel)
    await add_custom_bot(sessions, alice.id, schema=SECRET_SCHEMA)
    created = await create(alice, config=secret_config())
    platform = platform_service_pb2_grpc.PlatformServiceStub(stack.channel)
    deployment = await platform.GetBotDeployment(
        platform_service_pb2.GetBotDeploymentRequest(id=created.id), metadata=(("x-service-key", RUNTIME_KEY),)
    )
    config = json_format.MessageToDict(deployment.config)
    assert config["apiKey"] == API_KEY and config["exchange"]["secret"] == EXCHANGE_SECRET
    async with sessions() as session:
        audited = (await session.execute(text(
            "SELECT method, secrets_revealed FROM platform_audit WHERE resource_id = :id"), {"id": created.id})).all()
    assert [tuple(row) for row in audited] == [("GetBotDeployment", True)]
    # The owner still sees only placeholders.
    shown = await alice.bots.GetBot(bot_service_pb2.GetBotRequest(id=created.id), metadata=alice.metadata)
    assert API_KEY not in str(shown) and EXCHANGE_SECRET not in str(shown)
