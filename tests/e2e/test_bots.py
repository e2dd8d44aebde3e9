"""BotService end to end: real server(s), Envoy, NATS JetStream, SQLite and PostgreSQL.

A test "runtime" consumes bot.deploy-requested / bot.stop-requested from
JetStream with its own durable consumers and publishes execution events back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import field_mask_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.fixtures.accounts import new_account
from tests.integration.test_bots_support import add_custom_bot, bot_config
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.server.background import cancel_and_wait
from the0.server.db.engine import create_engine, session_factory
from the0.server.events.envelope import Envelope

BOT_SERVICE = bot_service_pb2.DESCRIPTOR.services_by_name["BotService"]
STATE = bot_pb2.BotState


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
async def sessions(database_url):
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(envoy=True)


class User:
    def __init__(self, user_id: str, token: str, channel: grpc.aio.Channel) -> None:
        self.id = user_id
        self.token = token
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.bots = bot_service_pb2_grpc.BotServiceStub(channel)

    def on(self, channel: grpc.aio.Channel) -> User:
        return User(self.id, self.token, channel)


async def register(channel: grpc.aio.Channel) -> User:
    return User(*await new_account(channel), channel)


@pytest.fixture
async def alice(stack, sessions) -> User:
    user = await register(stack.channel)
    await add_custom_bot(sessions, user.id)
    return user


@pytest.fixture
async def mallory(stack) -> User:
    return await register(stack.channel)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def create(
    user: User, name: str = "my bot", config: dict[str, Any] | None = None, **kw: Any
) -> bot_pb2.Bot:
    request = bot_service_pb2.CreateBotRequest(
        bot=bot_pb2.Bot(name=name, config=struct(config or bot_config())), **kw
    )
    return await user.bots.CreateBot(request, metadata=user.metadata)


async def rpc_error(awaitable: Any) -> tuple[grpc.StatusCode, str, dict[str, str], list[str]]:
    """(code, ErrorInfo.reason, ErrorInfo.metadata, BadRequest fields) of a failed call."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await awaitable
    status = rpc_status.from_call(raised.value)
    assert status is not None, raised.value
    reason, metadata, fields = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return raised.value.code(), reason, metadata, fields


async def next_bot(stream: Any, timeout: float = 10) -> bot_service_pb2.WatchBotResponse:
    """The next non-heartbeat message of a watch stream."""
    async with asyncio.timeout(timeout):
        while True:
            message = await stream.read()
            assert message is not grpc.aio.EOF, "the stream ended"
            if message.WhichOneof("event") != "heartbeat":
                return message


async def wait_for_state(user: User, bot_id: str, state: int, timeout: float = 15) -> bot_pb2.Bot:
    async with asyncio.timeout(timeout):
        while True:
            bot = await user.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot_id), metadata=user.metadata)
            if bot.state == state:
                return bot
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def fake_runtime(
    nats_client: Any, bot_ids: set[str], *, fail: bool = False
) -> AsyncIterator[list[dict]]:
    """Acts on deploy/stop requests for ``bot_ids`` as the platform's runtime would; yields what it saw."""
    js = nats_client.jetstream()
    async with asyncio.timeout(10):
        while True:
            try:
                await js.stream_info("THE0_EVENTS")
                break
            except Exception:  # noqa: BLE001 - the server creates the stream at start-up
                await asyncio.sleep(0.1)
    suffix = uuid.uuid4().hex[:8]
    config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    deploys = await js.pull_subscribe(
        "the0.bot.deploy-requested", durable=f"rt-deploy-{suffix}", stream="THE0_EVENTS", config=config
    )
    stops = await js.pull_subscribe(
        "the0.bot.stop-requested", durable=f"rt-stop-{suffix}", stream="THE0_EVENTS", config=config
    )
    seen: list[dict] = []

    async def publish(event_type: str, data: dict) -> None:
        envelope = Envelope(type=event_type, data=data)
        await js.publish(envelope.subject, envelope.to_json(), headers={"Nats-Msg-Id": envelope.id})

    async def serve(subscription: Any) -> None:
        while True:
            try:
                messages = await subscription.fetch(10, timeout=0.5)
            except TimeoutError:
                continue
            for message in messages:
                event = orjson.loads(message.data)
                await message.ack()
                if event["data"].get("botId") not in bot_ids:
                    continue
                seen.append(event)
                bot_id, execution = event["data"]["botId"], f"ex-{event['id'][:8]}"
                if event["type"] == "bot.deploy-requested":
                    if fail:
                        await publish("bot.execution.failed", {"botId": bot_id, "error": "exchange said no"})
                    else:
                        await publish(
                            "bot.execution.started",
                            {"botId": bot_id, "executionId": execution, "startedAt": "2026-01-01T00:00:00Z"},
                        )
                else:
                    await publish(
                        "bot.execution.completed",
                        {
                            "botId": bot_id,
                            "executionId": execution,
                            "completedAt": "2026-01-01T00:05:00Z",
                            "result": {"pnl": 1.5},
                        },
                    )

    tasks = [asyncio.create_task(serve(deploys)), asyncio.create_task(serve(stops))]
    try:
        yield seen
    finally:
        for task in tasks:
            await cancel_and_wait(task)
        for name in (f"rt-deploy-{suffix}", f"rt-stop-{suffix}"):
            with contextlib.suppress(Exception):
                await js.delete_consumer("THE0_EVENTS", name)


# -- the lifecycle --------------------------------------------------------------------------------


async def next_state(watch, *, transient):
    """The watch sends the latest state after each change; a transient state the runtime
    leaves within one read (DEPLOYING -> RUNNING at once) may be merged into the next."""
    bot = (await next_bot(watch)).bot
    return (await next_bot(watch)).bot if bot.state == transient else bot


async def test_the_whole_lifecycle_with_a_runtime_on_jetstream(stack, alice, nats_client):
    bot = await create(alice)
    assert bot.state == STATE.BOT_STATE_DRAFT and bot.etag and bot.custom_bot_id
    watch = alice.bots.WatchBot(bot_service_pb2.WatchBotRequest(id=bot.id), metadata=alice.metadata)
    assert (await next_bot(watch)).bot.state == STATE.BOT_STATE_DRAFT

    async with fake_runtime(nats_client, {bot.id}) as seen:
        deployed = await alice.bots.DeployBot(
            bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata
        )
        assert deployed.state == STATE.BOT_STATE_DEPLOYING
        running = await next_state(watch, transient=STATE.BOT_STATE_DEPLOYING)
        assert running.state == STATE.BOT_STATE_RUNNING
        assert running.last_execution.state == bot_pb2.BOT_EXECUTION_STATE_RUNNING

        stopping = await alice.bots.StopBot(
            bot_service_pb2.StopBotRequest(id=bot.id), metadata=alice.metadata
        )
        assert stopping.state == STATE.BOT_STATE_STOPPING
        stopped = await next_state(watch, transient=STATE.BOT_STATE_STOPPING)
        assert stopped.state == STATE.BOT_STATE_STOPPED
        assert stopped.last_execution.state == bot_pb2.BOT_EXECUTION_STATE_COMPLETED
        assert json_format.MessageToDict(stopped.last_execution.result) == {"pnl": 1.5}
        assert stopped.last_execution.end_time.ToJsonString() == "2026-01-01T00:05:00Z"

        # A redeploy after an update runs the new config.
        await alice.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(
                bot=bot_pb2.Bot(id=bot.id, config=struct(bot_config(quantity=9))),
                update_mask=field_mask_pb2.FieldMask(paths=["config"]),
            ),
            metadata=alice.metadata,
        )
        await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata)
        await wait_for_state(alice, bot.id, STATE.BOT_STATE_RUNNING)

    deploys = [e for e in seen if e["type"] == "bot.deploy-requested"]
    assert [d["data"]["config"]["quantity"] for d in deploys] == [2, 9]
    custom = deploys[0]["data"]["customBot"]
    assert deploys[0]["data"]["ownerId"] == alice.id and deploys[0]["data"]["name"] == "my bot"
    assert (custom["runtime"], custom["entrypoints"], custom["bucket"]) == (
        "python3.11",
        {"bot": "main.py"},
        "custom-bots",
    )
    assert custom["objectKey"].startswith(f"{alice.id}/my-bot/1.0.0/")

    await alice.bots.DeleteBot(bot_service_pb2.DeleteBotRequest(id=bot.id), metadata=alice.metadata)
    rest = []
    async with asyncio.timeout(10):
        while (message := await watch.read()) is not grpc.aio.EOF:
            rest.append(message)
    assert await watch.code() == grpc.StatusCode.OK
    assert rest[-1].WhichOneof("event") == "deleted" and rest[-1].deleted.id == bot.id
    code, reason, *_ = await rpc_error(
        alice.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=alice.metadata)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_a_runtime_failure_fails_the_bot_and_it_can_be_redeployed(stack, alice, nats_client):
    bot = await create(alice)
    async with fake_runtime(nats_client, {bot.id}, fail=True):
        await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata)
        failed = await wait_for_state(alice, bot.id, STATE.BOT_STATE_FAILED)
    assert failed.error == "exchange said no"
    code, reason, metadata, _ = await rpc_error(
        alice.bots.StopBot(bot_service_pb2.StopBotRequest(id=bot.id), metadata=alice.metadata)
    )
    assert (code, reason, metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
        "FAILED",
    )
    again = await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata)
    assert again.state == STATE.BOT_STATE_DEPLOYING and again.error == ""


async def test_a_change_on_one_replica_reaches_a_watcher_on_another(stack_factory, sessions):
    first, second = await stack_factory(), await stack_factory()
    await second.app.events.watch_hub.subscribed.wait()
    await first.app.events.watch_hub.subscribed.wait()
    user = await register(first.channel)
    await add_custom_bot(sessions, user.id)
    bot = await create(user)
    watch = user.on(second.channel).bots.WatchBot(
        bot_service_pb2.WatchBotRequest(id=bot.id), metadata=user.metadata
    )
    assert (await next_bot(watch)).bot.state == STATE.BOT_STATE_DRAFT
    await user.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=user.metadata)
    assert (await next_bot(watch, timeout=3)).bot.state == STATE.BOT_STATE_DEPLOYING
    watch.cancel()


# -- validation, idempotency, etags ---------------------------------------------------------------


async def test_config_errors_carry_every_violation(stack, alice, sessions):
    await add_custom_bot(sessions, alice.id, version="2.0.0", state="PENDING_REVIEW")
    cases = [
        # An "event" config has no schedule, and the real (scheduled) type needs one: both are listed.
        (
            bot_config(kind="event"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_INVALID",
            ["config.schedule", "config.type"],
        ),
        (
            bot_config(kind="event", schedule="0 * * * *"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_INVALID",
            ["config.type"],
        ),
        (bot_config(version="3.0.0"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
        (bot_config(version="2.0.0"), grpc.StatusCode.FAILED_PRECONDITION, "CUSTOM_BOT_NOT_APPROVED", []),
        (
            bot_config(schedule="*/5 * * *"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_INVALID",
            ["config.schedule"],
        ),
        (
            {k: v for k, v in bot_config().items() if k != "schedule"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_INVALID",
            ["config.schedule"],
        ),
        (
            {
                "type": "scheduled/my-bot",
                "version": "1.0.0",
                "schedule": "0 0 * * *",
                "symbol": 5,
                "other": True,
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_INVALID",
            ["config.other", "config.quantity", "config.symbol"],
        ),
    ]
    for config, code, reason, fields in cases:
        got_code, got_reason, _, got_fields = await rpc_error(create(alice, config=config))
        assert (got_code, got_reason, got_fields) == (code, reason, fields), config
    code, reason, _, fields = await rpc_error(
        alice.bots.CreateBot(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot()), metadata=alice.metadata)
    )
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        ["bot.name", "bot.config"],
    )


async def test_create_and_deploy_are_idempotent_with_a_request_id(stack, alice, nats_client):
    first = await create(alice, request_id="create-1")
    again = await create(alice, name="other", request_id="create-1")
    assert again.id == first.id and again.name == "my bot"
    deploy = bot_service_pb2.DeployBotRequest(id=first.id, request_id="deploy-1")
    async with fake_runtime(nats_client, {first.id}) as seen:
        await alice.bots.DeployBot(deploy, metadata=alice.metadata)
        await alice.bots.DeployBot(deploy, metadata=alice.metadata)  # a retry: no second deploy
        await wait_for_state(alice, first.id, STATE.BOT_STATE_RUNNING)
        await asyncio.sleep(0.5)
    assert [e["type"] for e in seen] == ["bot.deploy-requested"]
    listed = await alice.bots.ListBots(bot_service_pb2.ListBotsRequest(), metadata=alice.metadata)
    assert [b.id for b in listed.bots] == [first.id]


async def test_stale_etags_are_aborted(stack, alice):
    bot = await create(alice)
    updated = await alice.bots.UpdateBot(
        bot_service_pb2.UpdateBotRequest(
            bot=bot_pb2.Bot(id=bot.id, name="renamed", etag=bot.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=alice.metadata,
    )
    assert updated.name == "renamed" and updated.etag != bot.etag
    code, reason, *_ = await rpc_error(
        alice.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(
                bot=bot_pb2.Bot(id=bot.id, name="again", etag=bot.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=alice.metadata,
        )
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    code, reason, *_ = await rpc_error(
        alice.bots.DeleteBot(
            bot_service_pb2.DeleteBotRequest(id=bot.id, etag=bot.etag), metadata=alice.metadata
        )
    )
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    await alice.bots.DeleteBot(
        bot_service_pb2.DeleteBotRequest(id=bot.id, etag=updated.etag), metadata=alice.metadata
    )


async def test_update_masks(stack, alice):
    bot = await create(alice)
    code, reason, _, fields = await rpc_error(
        alice.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(
                bot=bot_pb2.Bot(id=bot.id, name="x"), update_mask=field_mask_pb2.FieldMask(paths=["state"])
            ),
            metadata=alice.metadata,
        )
    )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["updateMask"])
    code, reason, _, fields = await rpc_error(
        alice.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(bot=bot_pb2.Bot(id=bot.id, name="only a name")),
            metadata=alice.metadata,
        )
    )  # empty mask: replace both
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["bot.config"])
    both = await alice.bots.UpdateBot(
        bot_service_pb2.UpdateBotRequest(
            bot=bot_pb2.Bot(id=bot.id, name="both", config=struct(bot_config(quantity=4))),
            update_mask=field_mask_pb2.FieldMask(paths=["*"]),
        ),
        metadata=alice.metadata,
    )
    assert both.name == "both" and both.config["quantity"] == 4
    code, reason, _, fields = await rpc_error(
        alice.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(
                bot=bot_pb2.Bot(id=bot.id, config=struct(bot_config(quantity="many"))),
                update_mask=field_mask_pb2.FieldMask(paths=["config"]),
            ),
            metadata=alice.metadata,
        )
    )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID", ["config.quantity"])


# -- BOLA: every RPC, with someone else's bot ------------------------------------------------------


def bola_calls(alice: User, mallory: User, bot: bot_pb2.Bot) -> dict[str, Any]:
    """One call per BotService RPC, made by mallory against alice's bot."""
    stub, md = mallory.bots, mallory.metadata

    async def watch() -> None:
        async for _ in stub.WatchBot(bot_service_pb2.WatchBotRequest(id=bot.id), metadata=md):
            pass

    async def stream_logs() -> None:
        async for _ in stub.StreamBotLogs(bot_service_pb2.StreamBotLogsRequest(id=bot.id), metadata=md):
            pass

    return {
        "GetBot": lambda: stub.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=md),
        "UpdateBot": lambda: stub.UpdateBot(
            bot_service_pb2.UpdateBotRequest(
                bot=bot_pb2.Bot(id=bot.id, name="mine now", config=struct(bot_config()))
            ),
            metadata=md,
        ),
        "DeleteBot": lambda: stub.DeleteBot(bot_service_pb2.DeleteBotRequest(id=bot.id), metadata=md),
        "DeployBot": lambda: stub.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=md),
        "StopBot": lambda: stub.StopBot(bot_service_pb2.StopBotRequest(id=bot.id), metadata=md),
        "ListBotExecutions": lambda: stub.ListBotExecutions(
            bot_service_pb2.ListBotExecutionsRequest(id=bot.id), metadata=md
        ),
        "WatchBot": watch,
        "ListBotLogs": lambda: stub.ListBotLogs(bot_service_pb2.ListBotLogsRequest(id=bot.id), metadata=md),
        "StreamBotLogs": stream_logs,
        # No id in these two: CreateBot with alice's custom bot, ListBots must not show her bot.
        "CreateBot": lambda: stub.CreateBot(
            bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="x", config=struct(bot_config()))),
            metadata=md,
        ),
        "ListBots": lambda: stub.ListBots(bot_service_pb2.ListBotsRequest(), metadata=md),
    }


async def test_every_bot_rpc_with_another_users_bot_is_not_found(stack, alice, mallory):
    bot = await create(alice)
    await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata)
    calls = bola_calls(alice, mallory, bot)
    # From the descriptor: a new RPC cannot escape this test.
    assert set(calls) == {m.name for m in BOT_SERVICE.methods}
    for name, call in calls.items():
        if name == "ListBots":
            for state in (STATE.BOT_STATE_UNSPECIFIED, STATE.BOT_STATE_DEPLOYING):
                page = await mallory.bots.ListBots(
                    bot_service_pb2.ListBotsRequest(state=state), metadata=mallory.metadata
                )
                assert bot.id not in [b.id for b in page.bots]
            continue
        code, reason, *_ = await rpc_error(call())
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"), name
    after = await alice.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=alice.metadata)
    assert (after.name, after.state) == ("my bot", STATE.BOT_STATE_DEPLOYING)


# -- REST through Envoy -----------------------------------------------------------------------------


def rest_error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    [info] = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return response.status_code, info["reason"]


async def test_every_bot_route_through_envoy(stack, alice):
    headers = {"authorization": f"Bearer {alice.token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        created = await http.post("/api/bots", json={"name": "rest bot", "config": bot_config()})
        assert created.status_code == 200, created.text
        bot = created.json()
        assert bot["state"] == "BOT_STATE_DRAFT" and bot["config"]["symbol"] == "BTCUSD"
        bot_id = bot["id"]

        assert rest_error(
            await http.post("/api/bots", json={"name": "x", "config": bot_config(quantity=0)})
        ) == (400, "CONFIG_INVALID")
        assert rest_error(await http.get(f"/api/bots/{uuid.uuid4()}")) == (404, "NOT_FOUND")
        assert rest_error(await http.get("/api/bots/nope")) == (400, "VALIDATION_FAILED")

        got = await http.get(f"/api/bots/{bot_id}")
        assert got.status_code == 200 and got.json()["name"] == "rest bot"
        listed = await http.get("/api/bots", params={"pageSize": 10, "state": "BOT_STATE_DRAFT"})
        assert listed.status_code == 200 and [b["id"] for b in listed.json()["bots"]] == [bot_id]
        assert rest_error(await http.get("/api/bots", params={"pageSize": -1})) == (400, "VALIDATION_FAILED")

        patched = await http.patch(
            f"/api/bots/{bot_id}", params={"updateMask": "name"}, json={"name": "patched"}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "patched"
        put = await http.put(f"/api/bots/{bot_id}", json={"name": "put", "config": bot_config(quantity=3)})
        assert put.status_code == 200, put.text
        assert put.json()["config"]["quantity"] == 3
        stale = await http.put(
            f"/api/bots/{bot_id}", json={"name": "x", "config": bot_config(), "etag": patched.json()["etag"]}
        )
        assert rest_error(stale) == (409, "ETAG_MISMATCH")

        async with http.stream("GET", f"/api/bots/{bot_id}/watch") as watch:
            assert watch.status_code == 200
            lines = watch.aiter_lines()
            first = json.loads(await anext(lines))
            assert first["bot"]["state"] == "BOT_STATE_DRAFT"

            deployed = await http.post(f"/api/bots/{bot_id}/deploy", json={"requestId": "rest-deploy"})
            assert deployed.status_code == 200 and deployed.json()["state"] == "BOT_STATE_DEPLOYING"
            assert rest_error(await http.post(f"/api/bots/{bot_id}/deploy", json={})) == (
                400,
                "INVALID_STATE",
            )
            stopped = await http.post(f"/api/bots/{bot_id}/stop", json={})
            assert stopped.status_code == 200 and stopped.json()["state"] == "BOT_STATE_STOPPING"

            deleted = await http.delete(f"/api/bots/{bot_id}")
            assert deleted.status_code == 200, deleted.text
            rest = [json.loads(line) async for line in lines if line.strip()]
        states = [m["bot"]["state"] for m in rest if "bot" in m]
        assert states[:2] == ["BOT_STATE_DEPLOYING", "BOT_STATE_STOPPING"]
        assert rest[-1]["deleted"]["id"] == bot_id
        assert rest_error(await http.get(f"/api/bots/{bot_id}")) == (404, "NOT_FOUND")


async def test_rest_watchers_get_heartbeats_through_envoy(stack_factory, sessions):
    stack = await stack_factory(envoy=True, watch_heartbeat_seconds=0.5)
    user = await register(stack.channel)
    await add_custom_bot(sessions, user.id)
    bot = await create(user)
    headers = {"authorization": f"Bearer {user.token}"}
    async with (
        httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http,
        http.stream("GET", f"/api/bots/{bot.id}/watch") as watch,
    ):
        lines = watch.aiter_lines()
        assert json.loads(await anext(lines))["bot"]["id"] == bot.id
        async with asyncio.timeout(5):
            beat = json.loads(await anext(lines))
    assert beat["heartbeat"]["time"].endswith("Z")
