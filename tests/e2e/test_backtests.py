"""BacktestService end to end: real server(s), Envoy, NATS JetStream, S3 (moto), SQLite and PostgreSQL.

A test "runtime" consumes backtest.created from JetStream with its own durable
consumer, writes analysis.json and logs.txt to S3 where the event says, and
publishes backtest.started and backtest.completed (or failed) back.
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
from google.protobuf import json_format, message_factory, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.fixtures.accounts import new_account
from tests.integration.test_backtests_support import add_backtestable_bot, backtest_config
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
from the0.server.background import cancel_and_wait
from the0.server.db.engine import create_engine, session_factory
from the0.server.events.consumer import durable_name
from the0.server.events.envelope import Envelope

SERVICE = backtest_service_pb2.DESCRIPTOR.services_by_name["BacktestService"]
STATE = backtest_pb2.BacktestState
SUMMARY = {"totalReturn": 0.125, "sharpeRatio": 1.5, "maxDrawdown": -0.25, "winRate": 0.5, "totalTrades": 12}


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
async def sessions(database_url):
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def s3_settings(s3_server) -> dict[str, Any]:
    return {
        "minio_endpoint": s3_server.endpoint,
        "minio_access_key": s3_server.access_key,
        "minio_secret_key": s3_server.secret_key,
    }


@pytest.fixture
async def stack(stack_factory, s3_server):
    return await stack_factory(envoy=True, **s3_settings(s3_server))


class User:
    def __init__(self, user_id: str, token: str, channel: grpc.aio.Channel) -> None:
        self.id = user_id
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.headers = {"authorization": f"Bearer {token}"}
        self.token = token
        self.backtests = backtest_service_pb2_grpc.BacktestServiceStub(channel)

    def on(self, channel: grpc.aio.Channel) -> User:
        return User(self.id, self.token, channel)


async def register(channel: grpc.aio.Channel) -> User:
    return User(*await new_account(channel), channel)


@pytest.fixture
async def alice(stack, sessions) -> User:
    user = await register(stack.channel)
    await add_backtestable_bot(sessions, user.id)
    return user


@pytest.fixture
async def http(stack, alice):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10, headers=alice.headers) as client:
        yield client


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def create(user: User, config: dict[str, Any] | None = None, **kw: Any) -> backtest_pb2.Backtest:
    request = backtest_service_pb2.CreateBacktestRequest(
        backtest=backtest_pb2.Backtest(name="Q1", config=struct(config or backtest_config())), **kw
    )
    return await user.backtests.CreateBacktest(request, metadata=user.metadata)


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
            fields = sorted(v.field for v in bad.field_violations)
    return raised.value.code(), reason, metadata, fields


async def read_all(call: Any) -> list[Any]:
    return [message async for message in call]


def rest_error(response: httpx.Response) -> tuple[int, str]:
    infos = [d for d in response.json()["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return response.status_code, infos[0]["reason"]


async def states_until_done(call: Any, timeout: float = 15) -> list[int]:
    """The states a watch stream reports (heartbeats skipped) until it ends; asserts it ends OK."""
    states = []
    async with asyncio.timeout(timeout):
        async for message in call:
            if message.WhichOneof("event") == "backtest":
                states.append(message.backtest.state)
    assert await call.code() == grpc.StatusCode.OK
    return states


async def publish(js: Any, event_type: str, data: dict, *, event_id: str | None = None,
                  msg_id: str | None = None) -> int:
    """Publish one event as the runtime would; return its stream sequence."""
    envelope = Envelope(type=event_type, data=data, id=event_id or str(uuid.uuid4()))
    ack = await js.publish(envelope.subject, envelope.to_json(), headers={"Nats-Msg-Id": msg_id or envelope.id})
    return ack.seq


async def wait_handled(js: Any, event_type: str, seq: int, timeout: float = 10) -> None:
    """Until the server's durable consumer of ``event_type`` has acked stream sequence ``seq``
    (applied, duplicate or dropped: a dropped event leaves no row to look for)."""
    durable = durable_name("the0-api", event_type)
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(Exception):
                info = await js.consumer_info("THE0_EVENTS", durable)
                if info.ack_floor.stream_seq >= seq:
                    return
            await asyncio.sleep(0.05)


async def stream_ready(js: Any) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await js.stream_info("THE0_EVENTS")
                return
            except Exception:  # noqa: BLE001 - the server creates the stream at start-up
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def backtest_runtime(nats_client: Any, store: Any, owner_id: str, *, fail: bool = False) -> AsyncIterator[list]:
    """Runs ``owner_id``'s backtests as the platform's runtime would (from the stream's start); yields what it saw."""
    js = nats_client.jetstream()
    await stream_ready(js)
    durable = f"rt-backtest-{uuid.uuid4().hex[:8]}"
    created = await js.pull_subscribe(
        "the0.backtest.created", durable=durable, stream="THE0_EVENTS",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    seen: list[dict] = []

    async def serve() -> None:
        while True:
            try:
                messages = await created.fetch(50, timeout=0.5)
            except TimeoutError:
                continue
            for message in messages:
                event = orjson.loads(message.data)
                await message.ack()
                data = event["data"]
                if data["ownerId"] != owner_id:
                    continue
                seen.append(event)
                results = data["results"]
                await publish(js, "backtest.started", {"backtestId": data["backtestId"],
                                                       "startedAt": "2026-01-01T00:00:00Z"})
                logs = f"running {data['entrypoint']} on {data['config']['symbol']}\n".encode()
                await store.ensure_bucket(results["bucket"])
                await store.put_bytes(results["bucket"], results["logsKey"], logs, "text/plain")
                if fail:
                    await publish(js, "backtest.failed", {"backtestId": data["backtestId"], "error": "no candles"})
                    continue
                analysis = {"metrics": SUMMARY, "plots": [{"name": "equity", "points": [1, 2, 3]}], "tables": []}
                await store.put_bytes(results["bucket"], results["analysisKey"], orjson.dumps(analysis),
                                      "application/json")
                await publish(js, "backtest.completed", {"backtestId": data["backtestId"],
                                                         "startedAt": "2026-01-01T00:00:00Z",
                                                         "completedAt": "2026-01-01T00:05:00Z",
                                                         "summary": SUMMARY})

    task = asyncio.create_task(serve())
    try:
        yield seen
    finally:
        await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await js.delete_consumer("THE0_EVENTS", durable)


# -- the run --------------------------------------------------------------------------------------


async def test_a_runtime_runs_it_and_the_results_are_served_over_grpc_and_rest(
    stack, alice, http, nats_client, minio_store
):
    backtest = await create(alice)
    assert backtest.state == STATE.BACKTEST_STATE_PENDING and backtest.custom_bot_id and backtest.etag
    watch = alice.backtests.WatchBacktest(
        backtest_service_pb2.WatchBacktestRequest(id=backtest.id), metadata=alice.metadata
    )
    # The watch and the error checks happen before the runtime starts, so it sees every state.
    first = await anext(aiter(watch))
    assert first.backtest.state == STATE.BACKTEST_STATE_PENDING
    code, reason, metadata, _ = await rpc_error(read_all(alice.backtests.GetBacktestResults(
        backtest_service_pb2.GetBacktestResultsRequest(id=backtest.id), metadata=alice.metadata)))
    assert (code, reason, metadata["state"]) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE", "PENDING")
    assert rest_error(await http.get(f"/api/backtests/{backtest.id}/results")) == (400, "INVALID_STATE")
    assert rest_error(await http.get(f"/api/backtests/{backtest.id}/logs")) == (404, "RESULTS_UNAVAILABLE")

    async with backtest_runtime(nats_client, minio_store, alice.id) as seen:
        states = await states_until_done(watch)
    assert states[-1] == STATE.BACKTEST_STATE_COMPLETED
    assert set(states) <= {STATE.BACKTEST_STATE_RUNNING, STATE.BACKTEST_STATE_COMPLETED}
    [event] = seen
    assert event["data"]["backtestId"] == backtest.id and event["data"]["entrypoint"] == "backtest.py"
    assert event["data"]["archive"]["objectKey"].startswith(f"{alice.id}/my-bot/1.0.0/")

    done = await alice.backtests.GetBacktest(
        backtest_service_pb2.GetBacktestRequest(id=backtest.id), metadata=alice.metadata
    )
    assert json_format.MessageToDict(done.summary) == SUMMARY
    assert done.start_time.ToJsonString() == "2026-01-01T00:00:00Z"
    assert done.end_time.ToJsonString() == "2026-01-01T00:05:00Z"

    chunks = await read_all(alice.backtests.GetBacktestResults(
        backtest_service_pb2.GetBacktestResultsRequest(id=backtest.id), metadata=alice.metadata))
    assert chunks[0].content_type == "application/json"
    analysis = json.loads(b"".join(c.data for c in chunks))
    assert analysis["metrics"] == SUMMARY and analysis["plots"][0]["name"] == "equity"

    rest = await http.get(f"/api/backtests/{backtest.id}/results")
    assert rest.status_code == 200, rest.text
    assert rest.headers["content-type"].startswith("application/json") and rest.json() == analysis
    logs = await http.get(f"/api/backtests/{backtest.id}/logs")
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
    assert logs.text == "running backtest.py on BTCUSD\n"
    got = await http.get(f"/api/backtests/{backtest.id}")
    assert got.status_code == 200 and got.json()["summary"]["sharpeRatio"] == 1.5

    # A finished backtest's REST watch: its state as one NDJSON line, then the end.
    async with http.stream("GET", f"/api/backtests/{backtest.id}/watch") as rest_watch:
        assert rest_watch.status_code == 200
        lines = [json.loads(line) async for line in rest_watch.aiter_lines() if line.strip()]
    assert [m["backtest"]["state"] for m in lines] == ["BACKTEST_STATE_COMPLETED"]
    listed = await http.get("/api/backtests", params={"state": "BACKTEST_STATE_COMPLETED"})
    assert [b["id"] for b in listed.json()["backtests"]] == [backtest.id]


async def test_a_runtime_failure_fails_it_and_its_logs_stay_readable(stack, alice, http, nats_client, minio_store):
    async with backtest_runtime(nats_client, minio_store, alice.id, fail=True):
        created = await http.post("/api/backtests", json={"name": "rest run", "config": backtest_config()},
                                  params={"requestId": "rest-1"})
        assert created.status_code == 200, created.text
        backtest_id = created.json()["id"]
        again = await http.post("/api/backtests", json={"name": "other", "config": backtest_config()},
                                params={"requestId": "rest-1"})
        assert again.json()["id"] == backtest_id
        async with asyncio.timeout(15):
            async with http.stream("GET", f"/api/backtests/{backtest_id}/watch") as rest_watch:
                lines = [json.loads(line) async for line in rest_watch.aiter_lines() if line.strip()]
    states = [m["backtest"]["state"] for m in lines if "backtest" in m]
    assert states[-1] == "BACKTEST_STATE_FAILED" and lines[-1]["backtest"]["error"] == "no candles"
    assert rest_error(await http.get(f"/api/backtests/{backtest_id}/results")) == (400, "INVALID_STATE")
    logs = await http.get(f"/api/backtests/{backtest_id}/logs")
    assert logs.status_code == 200 and "backtest.py" in logs.text
    assert rest_error(await http.post(f"/api/backtests/{backtest_id}/cancel", json={})) == (400, "INVALID_STATE")


# -- cancel, duplicates, out of order ----------------------------------------------------------------


async def test_cancel_tells_the_runtime_and_late_events_are_ignored(stack, alice, http, nats_client, sessions):
    js = nats_client.jetstream()
    await stream_ready(js)
    durable = f"rt-cancel-{uuid.uuid4().hex[:8]}"
    cancels = await js.pull_subscribe("the0.backtest.cancel-requested", durable=durable, stream="THE0_EVENTS",
                                      config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))
    try:
        backtest = await create(alice)
        await wait_handled(js, "backtest.started", await publish(js, "backtest.started", {"backtestId": backtest.id}))
        cancelled = await http.post(f"/api/backtests/{backtest.id}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "BACKTEST_STATE_CANCELLED"
        async with asyncio.timeout(10):
            while True:
                messages = await cancels.fetch(10, timeout=5)
                events = [orjson.loads(m.data) for m in messages]
                for m in messages:
                    await m.ack()
                if any(e["data"]["backtestId"] == backtest.id for e in events):
                    break
        late = await publish(js, "backtest.completed", {"backtestId": backtest.id, "summary": SUMMARY})
        await wait_handled(js, "backtest.completed", late)
        after = await alice.backtests.GetBacktest(
            backtest_service_pb2.GetBacktestRequest(id=backtest.id), metadata=alice.metadata
        )
        assert after.state == STATE.BACKTEST_STATE_CANCELLED and not after.HasField("summary")
        assert after.etag == cancelled.json()["etag"]
        code, reason, metadata, _ = await rpc_error(alice.backtests.CancelBacktest(
            backtest_service_pb2.CancelBacktestRequest(id=backtest.id), metadata=alice.metadata))
        assert (code, reason, metadata["state"]) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE",
                                                     "CANCELLED")
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer("THE0_EVENTS", durable)


async def test_completed_before_started_and_duplicates_through_jetstream(stack, alice, nats_client, sessions):
    js = nats_client.jetstream()
    await stream_ready(js)
    backtest = await create(alice)
    event_id = str(uuid.uuid4())
    first = await publish(js, "backtest.completed", {"backtestId": backtest.id, "summary": SUMMARY}, event_id=event_id)
    await wait_handled(js, "backtest.completed", first)
    done = await alice.backtests.GetBacktest(
        backtest_service_pb2.GetBacktestRequest(id=backtest.id), metadata=alice.metadata
    )
    assert done.state == STATE.BACKTEST_STATE_COMPLETED
    # The same event again (past JetStream's duplicate window: another Nats-Msg-Id) and a late start.
    again = await publish(js, "backtest.completed", {"backtestId": backtest.id, "summary": {"totalReturn": -1}},
                          event_id=event_id, msg_id=str(uuid.uuid4()))
    late = await publish(js, "backtest.started", {"backtestId": backtest.id})
    await wait_handled(js, "backtest.completed", again)
    await wait_handled(js, "backtest.started", late)
    after = await alice.backtests.GetBacktest(
        backtest_service_pb2.GetBacktestRequest(id=backtest.id), metadata=alice.metadata
    )
    assert after.state == STATE.BACKTEST_STATE_COMPLETED and after.etag == done.etag
    assert json_format.MessageToDict(after.summary) == SUMMARY


# -- errors and owner scoping -----------------------------------------------------------------------


async def test_config_errors(stack, alice, sessions):
    await add_backtestable_bot(sessions, alice.id, version="2.0.0", state="PENDING_REVIEW")
    await add_backtestable_bot(sessions, alice.id, version="3.0.0", entrypoint=None)
    cases = [
        (backtest_config(days=0, symbol="x", extra=True), grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID",
         ["config.days", "config.extra", "config.symbol"]),
        (backtest_config(version="2.0.0"), grpc.StatusCode.FAILED_PRECONDITION, "CUSTOM_BOT_NOT_APPROVED", []),
        (backtest_config(version="3.0.0"), grpc.StatusCode.FAILED_PRECONDITION, "BACKTEST_NOT_SUPPORTED", []),
        (backtest_config(version="4.0.0"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
    ]
    for config, code, reason, fields in cases:
        assert (await rpc_error(create(alice, config)))[::3] == (code, fields)
        assert (await rpc_error(create(alice, config)))[1] == reason
    empty = backtest_service_pb2.CreateBacktestRequest()
    code, reason, _, fields = await rpc_error(alice.backtests.CreateBacktest(empty, metadata=alice.metadata))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["backtest"])


async def test_every_rpc_answers_not_found_for_another_users_backtest(stack, alice, sessions):
    backtest = await create(alice)
    mallory = await register(stack.channel)
    covered = set()
    for method in SERVICE.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        call = getattr(mallory.backtests, method.name)
        if "id" in method.input_type.fields_by_name:
            request = request_class(id=backtest.id)
        elif method.name == "CreateBacktest":
            # Alice's custom bot does not exist for mallory.
            request = request_class(backtest=backtest_pb2.Backtest(name="x", config=struct(backtest_config())))
        else:
            listed = await call(request_class(), metadata=mallory.metadata)
            assert list(listed.backtests) == [], method.name
            covered.add(method.name)
            continue
        answer = call(request, metadata=mallory.metadata)
        code, reason, *_ = await rpc_error(read_all(answer) if method.server_streaming else answer)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"), method.name
        covered.add(method.name)
    assert covered == {m.name for m in SERVICE.methods}
    # And alice's backtest is untouched.
    mine = await alice.backtests.GetBacktest(
        backtest_service_pb2.GetBacktestRequest(id=backtest.id), metadata=alice.metadata
    )
    assert mine.state == STATE.BACKTEST_STATE_PENDING and mine.etag == backtest.etag


async def test_a_change_on_one_replica_ends_a_watch_on_another(stack_factory, s3_server, sessions):
    first = await stack_factory(**s3_settings(s3_server))
    second = await stack_factory(**s3_settings(s3_server))
    await first.app.events.watch_hub.subscribed.wait()
    await second.app.events.watch_hub.subscribed.wait()
    user = await register(first.channel)
    await add_backtestable_bot(sessions, user.id)
    backtest = await create(user)
    watch = user.on(second.channel).backtests.WatchBacktest(
        backtest_service_pb2.WatchBacktestRequest(id=backtest.id), metadata=user.metadata
    )
    assert (await anext(aiter(watch))).backtest.state == STATE.BACKTEST_STATE_PENDING
    await user.backtests.CancelBacktest(
        backtest_service_pb2.CancelBacktestRequest(id=backtest.id), metadata=user.metadata
    )
    # Well within the 25 s heartbeat re-read: the change came through NATS.
    assert await states_until_done(watch, timeout=3) == [STATE.BACKTEST_STATE_CANCELLED]
