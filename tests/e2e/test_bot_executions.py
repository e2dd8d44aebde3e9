"""ListBotExecutions end to end: runtime events on JetStream become history, read over gRPC and REST."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format

from tests.e2e.test_bots import User, create, register, rest_error, rpc_error
from tests.integration.test_bots_support import add_custom_bot
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.server.db.engine import create_engine, session_factory
from the0.server.events.envelope import Envelope


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(envoy=True)


@pytest.fixture
async def alice(stack, database_url) -> User:
    user = await register(stack.channel)
    engine = create_engine(database_url)
    try:
        await add_custom_bot(session_factory(engine), user.id)
    finally:
        await engine.dispose()
    return user


@pytest.fixture
async def mallory(stack) -> User:
    return await register(stack.channel)


async def publish(nats_client: Any, event_type: str, data: dict[str, Any]) -> None:
    js = nats_client.jetstream()
    async with asyncio.timeout(10):
        while True:
            try:
                await js.stream_info("THE0_EVENTS")
                break
            except Exception:  # noqa: BLE001 - the server creates the stream at start-up
                await asyncio.sleep(0.1)
    envelope = Envelope(type=event_type, data=data)
    await js.publish(envelope.subject, envelope.to_json(), headers={"Nats-Msg-Id": envelope.id})


async def executions_until(user: Any, bot_id: str, count: int, *, finished: int = 0) -> list[bot_pb2.BotExecution]:
    async with asyncio.timeout(15):
        while True:
            page = await user.bots.ListBotExecutions(
                bot_service_pb2.ListBotExecutionsRequest(id=bot_id), metadata=user.metadata
            )
            done = [e for e in page.executions if e.state == bot_pb2.BOT_EXECUTION_STATE_COMPLETED]
            if len(page.executions) >= count and len(done) >= finished:
                return list(page.executions)
            await asyncio.sleep(0.05)


async def test_runtime_events_become_one_row_per_execution(stack, alice, mallory, nats_client):
    bot = await create(alice)
    await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata)
    # completed before started (separate consumers), and a second execution: two rows.
    await publish(nats_client, "bot.execution.completed", {
        "botId": bot.id, "executionId": "run-1", "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:01:00Z", "result": {"pnl": 1.5},
    })
    await publish(nats_client, "bot.execution.started",
                  {"botId": bot.id, "executionId": "run-1", "startedAt": "2026-01-01T00:00:00Z"})
    await publish(nats_client, "bot.execution.started",
                  {"botId": bot.id, "executionId": "run-2", "startedAt": "2026-01-01T00:05:00Z"})
    executions = await executions_until(alice, bot.id, 2, finished=1)
    assert [e.id for e in executions] == ["run-2", "run-1"]
    newest, oldest = executions
    assert newest.state == bot_pb2.BOT_EXECUTION_STATE_RUNNING and not newest.HasField("end_time")
    assert oldest.state == bot_pb2.BOT_EXECUTION_STATE_COMPLETED
    assert json_format.MessageToDict(oldest.result) == {"pnl": 1.5}
    assert oldest.end_time.ToJsonString() == "2026-01-01T00:01:00Z"
    # GetBot.lastExecution stays: the latest report applied (the consumers of each type run side by side).
    got = await alice.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=alice.metadata)
    assert got.last_execution.id in {"run-1", "run-2"}

    # Pages of one: keyset tokens, owner- and bot-bound.
    first = await alice.bots.ListBotExecutions(
        bot_service_pb2.ListBotExecutionsRequest(id=bot.id, page_size=1), metadata=alice.metadata
    )
    second = await alice.bots.ListBotExecutions(
        bot_service_pb2.ListBotExecutionsRequest(id=bot.id, page_size=1, page_token=first.next_page_token),
        metadata=alice.metadata,
    )
    assert [e.id for e in (*first.executions, *second.executions)] == ["run-2", "run-1"]
    assert second.next_page_token == ""
    other = await create(alice, name="other bot")
    code, reason, *_ = await rpc_error(alice.bots.ListBotExecutions(
        bot_service_pb2.ListBotExecutionsRequest(id=other.id, page_token=first.next_page_token),
        metadata=alice.metadata,
    ))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    code, reason, *_ = await rpc_error(mallory.bots.ListBotExecutions(
        bot_service_pb2.ListBotExecutionsRequest(id=bot.id), metadata=mallory.metadata
    ))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    code, reason, _, fields = await rpc_error(alice.bots.ListBotExecutions(
        bot_service_pb2.ListBotExecutionsRequest(id=bot.id, page_size=-1), metadata=alice.metadata
    ))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["pageSize"])


async def test_the_executions_route_through_envoy(stack, alice, mallory, nats_client):
    bot = await create(alice)
    await alice.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=alice.metadata)
    await publish(nats_client, "bot.execution.started",
                  {"botId": bot.id, "executionId": "run-1", "startedAt": "2026-01-01T00:00:00Z"})
    await executions_until(alice, bot.id, 1)
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15) as http:
        own = {"authorization": f"Bearer {alice.token}"}
        listed = await http.get(f"/api/bots/{bot.id}/executions", params={"pageSize": 5}, headers=own)
        assert listed.status_code == 200, listed.text
        [execution] = listed.json()["executions"]
        assert execution == {
            "id": "run-1", "state": "BOT_EXECUTION_STATE_RUNNING", "startTime": "2026-01-01T00:00:00Z", "error": "",
        }
        theirs = {"authorization": f"Bearer {mallory.token}"}
        assert rest_error(await http.get(f"/api/bots/{bot.id}/executions", headers=theirs)) == (404, "NOT_FOUND")
        assert rest_error(await http.get(f"/api/bots/{uuid.uuid4()}/executions", headers=own)) == (404, "NOT_FOUND")
        assert rest_error(await http.get("/api/bots/nope/executions", headers=own)) == (400, "VALIDATION_FAILED")
        assert rest_error(
            await http.get(f"/api/bots/{bot.id}/executions", params={"pageToken": "x" * 513}, headers=own)
        ) == (400, "VALIDATION_FAILED")
        assert rest_error(await http.get(f"/api/bots/{bot.id}/executions")) == (401, "TOKEN_MISSING")
