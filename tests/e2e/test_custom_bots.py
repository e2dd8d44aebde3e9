"""Custom bots end to end: real server replicas, real Envoy, real NATS JetStream, SQLite and PostgreSQL.

Callers are real users (AuthService.Register / an admin bootstrapped from settings).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import httpx
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.unit.test_archive_checks import bot_zip, make_zip
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.custom_bot.v1 import custom_bot_pb2, custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.server.events.nats_connection import EVENTS_STREAM, connect_nats

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
PENDING = custom_bot_pb2.CUSTOM_BOT_STATE_PENDING_REVIEW
AWAITING = custom_bot_pb2.CUSTOM_BOT_STATE_AWAITING_HUMAN_REVIEW
APPROVED = custom_bot_pb2.CUSTOM_BOT_STATE_APPROVED
DECLINED = custom_bot_pb2.CUSTOM_BOT_STATE_DECLINED


async def register(stack: Any) -> list[tuple[str, str]]:
    name = f"u{uuid.uuid4().hex[:10]}"
    tokens = await auth_service_pb2_grpc.AuthServiceStub(stack.channel).Register(
        auth_service_pb2.RegisterRequest(email=f"{name}@example.com", password="correct horse battery",
                                         username=name))
    return [("authorization", f"Bearer {tokens.access_token}")]


async def admin(stack: Any) -> list[tuple[str, str]]:
    await stack.app.identity.admin_ready.wait()
    tokens = await auth_service_pb2_grpc.AuthServiceStub(stack.channel).Login(
        auth_service_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
    return [("authorization", f"Bearer {tokens.access_token}")]


def stub(stack: Any) -> custom_bot_service_pb2_grpc.CustomBotServiceStub:
    return custom_bot_service_pb2_grpc.CustomBotServiceStub(stack.channel)


def upload_requests(data: bytes, chunk: int = 256 * 1024) -> Iterator[custom_bot_service_pb2.UploadCustomBotRequest]:
    for start in range(0, max(len(data), 1), chunk):
        yield custom_bot_service_pb2.UploadCustomBotRequest(
            chunk={"content_type": "application/zip", "data": data[start : start + chunk]})


async def upload(stack: Any, auth: list[tuple[str, str]], data: bytes) -> custom_bot_pb2.CustomBot:
    return await stub(stack).UploadCustomBot(upload_requests(data), metadata=auth)


def grpc_error(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None, error
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    fields: list[str] = []
    reason = ""
    for detail in status.details:
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return error.code(), reason, fields


def rest_reason(body: dict[str, Any]) -> str:
    (info,) = [d for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


async def eventually(predicate: Any, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await predicate()):
            await asyncio.sleep(0.05)
    return result


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True, watch_heartbeat_seconds=0.3)


@pytest.fixture
async def http(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=20) as client:
        yield client


async def test_grpc_upload_get_list_download(stack: Any) -> None:
    auth = await register(stack)
    data = bot_zip()
    created = await upload(stack, auth, data)
    assert (created.name, created.version, created.state) == ("sma-crossover", "1.0.0", PENDING)
    assert created.archive.sha256 == hashlib.sha256(data).hexdigest()
    assert created.manifest.runtime == custom_bot_pb2.RUNTIME_PYTHON3_11
    assert created.bot_schema["required"] == ["symbol"]
    assert created.readme.startswith("# SMA crossover")

    fetched = await stub(stack).GetCustomBot(custom_bot_service_pb2.GetCustomBotRequest(id=created.id),
                                             metadata=auth)
    assert fetched == created
    newer = await upload(stack, auth, bot_zip(version="1.1.0"))
    listed = await stub(stack).ListCustomBots(custom_bot_service_pb2.ListCustomBotsRequest(), metadata=auth)
    assert [b.id for b in listed.custom_bots] == [newer.id]
    every = await stub(stack).ListCustomBots(custom_bot_service_pb2.ListCustomBotsRequest(name="sma-crossover"),
                                             metadata=auth)
    assert [b.version for b in every.custom_bots] == ["1.1.0", "1.0.0"]

    downloaded = b""
    async for body in stub(stack).DownloadCustomBotArchive(
            custom_bot_service_pb2.DownloadCustomBotArchiveRequest(id=created.id), metadata=auth):
        assert body.content_type == "application/zip"
        downloaded += body.data
    assert downloaded == data

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stack, auth, bot_zip(version="1.0.5"))
    assert grpc_error(raised.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_NOT_INCREASING")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stack, auth, bot_zip(version="1.1.0"))
    assert grpc_error(raised.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")


async def test_rest_upload_with_a_raw_body_like_curl(stack: Any, http: httpx.AsyncClient) -> None:
    auth = dict(await register(stack))
    data = bot_zip(extra={"data/noise.bin": os.urandom(1_600_000)})  # ~1.6 MB: several Envoy chunks
    response = await http.post("/api/custom-bots/upload", content=data,
                               headers={**auth, "content-type": "application/zip"})
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["state"] == "CUSTOM_BOT_STATE_PENDING_REVIEW"
    assert created["archive"]["sizeBytes"] == str(len(data))
    assert created["archive"]["sha256"] == hashlib.sha256(data).hexdigest()

    archive = await http.get(f"/api/custom-bots/{created['id']}/archive", headers=auth)
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    assert archive.content == data
    listed = await http.get("/api/custom-bots", headers=auth)
    assert [b["id"] for b in listed.json()["customBots"]] == [created["id"]]
    got = await http.get(f"/api/custom-bots/{created['id']}", headers=auth)
    assert got.json()["etag"] == created["etag"]


async def test_the_size_limit_over_grpc_and_rest(stack_factory: Any) -> None:
    stack = await stack_factory(envoy=True, max_upload_bytes=256 * 1024)
    auth = await register(stack)
    data = bot_zip(extra={"big.bin": os.urandom(640_000)})  # ~640 KB, incompressible
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stack, auth, data)
    assert grpc_error(raised.value)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE")
    assert "0.25 MB" in (raised.value.details() or "")
    async def chunked() -> AsyncIterator[bytes]:
        # No content-length: Envoy cannot refuse up front (that case is in test_edge_replies),
        # so the body streams until the server stops it.
        for _ in range(8):
            yield data

    async with httpx.AsyncClient(base_url=stack.http_url, timeout=20) as http:
        response = await http.post("/api/custom-bots/upload", content=chunked(),
                                   headers={**dict(auth), "content-type": "application/zip"})
    # The server says RESOURCE_EXHAUSTED/TOO_LARGE; on the upload route Envoy answers 413, not 429.
    assert response.status_code == 413, response.text
    body = response.json()
    assert rest_reason(body) == "TOO_LARGE"
    assert "0.25 MB" in body["message"]


@pytest.mark.parametrize(
    ("data", "reason", "field"),
    [
        (b"definitely not a zip", "ARCHIVE_INVALID", "archive"),
        (make_zip({}), "ARCHIVE_INVALID", "archive"),
        (bot_zip(extra={"../../etc/evil": b"x"}), "ARCHIVE_INVALID", "archive"),
        (make_zip({"main.py": b"x"}), "MANIFEST_INVALID", "manifest"),
        (bot_zip(version="latest"), "MANIFEST_INVALID", "manifest.version"),
        (bot_zip(entrypoints={"bot": "nope.py", "backtest": "backtest.py"}), "MANIFEST_INVALID",
         "manifest.entrypoints.bot"),
    ],
    ids=["not-a-zip", "empty", "zip-slip", "no-manifest", "bad-version", "missing-entrypoint"],
)
async def test_bad_uploads_are_400_with_field_violations(stack: Any, http: httpx.AsyncClient, data: bytes,
                                                         reason: str, field: str) -> None:
    auth = await register(stack)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stack, auth, data)
    code, got_reason, fields = grpc_error(raised.value)
    assert (code, got_reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert field in fields
    response = await http.post("/api/custom-bots/upload", content=data,
                               headers={**dict(auth), "content-type": "application/zip"})
    assert response.status_code == 400, response.text
    assert rest_reason(response.json()) == reason
    (bad,) = [d for d in response.json()["details"] if d["@type"].endswith("BadRequest")]
    assert field in [v["field"] for v in bad["fieldViolations"]]


async def test_someone_elses_custom_bot_does_not_exist(stack: Any, http: httpx.AsyncClient) -> None:
    alice, bob = await register(stack), await register(stack)
    created = await upload(stack, alice, bot_zip())
    for call in (
        stub(stack).GetCustomBot(custom_bot_service_pb2.GetCustomBotRequest(id=created.id), metadata=bob),
        _drain(stub(stack).DownloadCustomBotArchive(
            custom_bot_service_pb2.DownloadCustomBotArchiveRequest(id=created.id), metadata=bob)),
        _drain(stub(stack).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                          metadata=bob)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert grpc_error(raised.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    response = await http.get(f"/api/custom-bots/{created.id}/archive", headers=dict(bob))
    assert response.status_code == 404 and rest_reason(response.json()) == "NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # a user may not review
        await stub(stack).ReviewCustomBot(custom_bot_service_pb2.ReviewCustomBotRequest(
            id=created.id, decision=custom_bot_service_pb2.REVIEW_DECISION_APPROVE), metadata=alice)
    assert grpc_error(raised.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def _analyzer(nats_url: str) -> tuple[Any, Any, Any]:
    """A test security analyzer: its own durable consumer of custom-bot.submitted."""
    nc = await connect_nats(nats_url, name="test-analyzer")
    js = nc.jetstream()
    subscription = await js.pull_subscribe(
        "the0.custom-bot.submitted", durable=f"analyzer-{uuid.uuid4().hex[:8]}", stream=EVENTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))
    return nc, js, subscription


async def _verdict(js: Any, event_type: str, data: dict[str, Any]) -> None:
    event_id = str(uuid.uuid4())
    await js.publish(f"the0.{event_type}", orjson.dumps(
        {"id": event_id, "type": event_type, "data": data, "timestamp": "2026-01-01T00:00:00Z",
         "correlationId": None}), headers={"Nats-Msg-Id": event_id})


async def test_review_loop_through_jetstream_with_a_watcher(stack_factory: Any, isolated_nats: Any) -> None:
    stack = await stack_factory(envoy=True, nats_url=isolated_nats.url, watch_heartbeat_seconds=0.3,
                                admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)
    await asyncio.wait_for(stack.app.events.stream_ready.wait(), 10)
    nc, js, analyzer = await _analyzer(isolated_nats.url)
    try:
        auth = await register(stack)
        created = await upload(stack, auth, bot_zip())
        (message,) = await analyzer.fetch(1, timeout=10)
        submitted = orjson.loads(message.data)
        assert submitted["type"] == "custom-bot.submitted"
        assert submitted["data"]["id"] == created.id
        assert submitted["data"]["sha256"] == created.archive.sha256
        assert submitted["data"]["manifest"]["entrypoints"] == {"bot": "main.py", "backtest": "backtest.py"}
        assert message.headers["Nats-Msg-Id"] == submitted["id"]
        await message.ack()

        watch = stub(stack).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                           metadata=auth)
        first = await watch.read()
        assert first.custom_bot.state == PENDING
        beat = await watch.read()  # nothing happens for a while: a heartbeat
        assert beat.WhichOneof("event") == "heartbeat"

        await _verdict(js, "custom-bot.awaiting-human-review",
                       {"customBotId": created.id, "reasons": ["network access"], "score": 61})
        changed = await _next_bot(watch)
        assert changed.state == AWAITING and list(changed.review.reasons) == ["network access"]
        assert changed.review.score == 61

        # REST watcher too: newline-delimited JSON through Envoy.
        async with (
            httpx.AsyncClient(base_url=stack.http_url, timeout=20) as http_client,
            http_client.stream("GET", f"/api/custom-bots/{created.id}/watch", headers=dict(auth)) as rest_watch,
        ):
            lines = rest_watch.aiter_lines()
            first_line = json.loads(await anext(lines))
            assert first_line["customBot"]["state"] == "CUSTOM_BOT_STATE_AWAITING_HUMAN_REVIEW"
            review = await http_client.post(
                f"/api/custom-bots/{created.id}/review",
                json={"decision": "REVIEW_DECISION_APPROVE", "reasons": ["fine: read-only network"]},
                headers=dict(await admin(stack)))
            assert review.status_code == 200, review.text
            assert review.json()["state"] == "CUSTOM_BOT_STATE_APPROVED"
            rest_states = []
            async for line in lines:
                item = json.loads(line)
                if "customBot" in item:
                    rest_states.append(item["customBot"]["state"])
            assert rest_states[-1] == "CUSTOM_BOT_STATE_APPROVED"  # and the stream ended

        final = await _next_bot(watch)
        assert final.state == APPROVED
        assert await watch.read() == grpc.aio.EOF  # ends with OK at a terminal state
        assert await watch.code() == grpc.StatusCode.OK

        with pytest.raises(grpc.aio.AioRpcError) as raised:  # only from AWAITING_HUMAN_REVIEW
            await stub(stack).ReviewCustomBot(custom_bot_service_pb2.ReviewCustomBotRequest(
                id=created.id, decision=custom_bot_service_pb2.REVIEW_DECISION_DECLINE, reasons=["x"]),
                metadata=await admin(stack))
        assert grpc_error(raised.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    finally:
        await nc.close()


async def _next_bot(watch: Any) -> custom_bot_pb2.CustomBot:
    while True:
        item = await asyncio.wait_for(watch.read(), 10)
        assert item is not grpc.aio.EOF
        if item.WhichOneof("event") == "custom_bot":
            return item.custom_bot


async def test_a_watcher_on_replica_a_sees_a_verdict_applied_on_replica_b(stack_factory: Any,
                                                                          isolated_nats: Any) -> None:
    common = {"nats_url": isolated_nats.url, "admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD}
    # A's heartbeat is long: only the NATS fan-out can deliver B's change in time.
    replica_a = await stack_factory(watch_heartbeat_seconds=30, **common)
    replica_b = await stack_factory(watch_heartbeat_seconds=30, **common)
    await asyncio.wait_for(replica_a.app.events.watch_hub.subscribed.wait(), 10)
    nc, js, _ = await _analyzer(isolated_nats.url)
    try:
        auth = await register(replica_a)
        created = await upload(replica_a, auth, bot_zip())
        await _verdict(js, "custom-bot.analysis-failed", {"customBotId": created.id, "error": "sandbox crashed"})
        await eventually(lambda: _state_is(replica_b, auth, created.id, AWAITING))

        watch = stub(replica_a).WatchCustomBot(custom_bot_service_pb2.WatchCustomBotRequest(id=created.id),
                                               metadata=auth)
        assert (await watch.read()).custom_bot.state == AWAITING
        started = asyncio.get_running_loop().time()
        await stub(replica_b).ReviewCustomBot(custom_bot_service_pb2.ReviewCustomBotRequest(
            id=created.id, decision=custom_bot_service_pb2.REVIEW_DECISION_DECLINE, reasons=["no"]),
            metadata=await admin(replica_b))
        declined = await asyncio.wait_for(_next_bot(watch), 5)
        assert declined.state == DECLINED and list(declined.review.reasons) == ["no"]
        assert asyncio.get_running_loop().time() - started < 2
        assert await watch.read() == grpc.aio.EOF
    finally:
        await nc.close()


async def _state_is(stack: Any, auth: Any, custom_bot_id: str, state: int) -> bool:
    bot = await stub(stack).GetCustomBot(custom_bot_service_pb2.GetCustomBotRequest(id=custom_bot_id),
                                         metadata=auth)
    return bot.state == state


async def test_uploads_succeed_with_nats_down_and_every_event_arrives_once(stack_factory: Any,
                                                                           isolated_nats: Any) -> None:
    stack = await stack_factory(nats_url=isolated_nats.url)
    await asyncio.wait_for(stack.app.events.stream_ready.wait(), 10)
    auth = await register(stack)
    ids = [(await upload(stack, auth, bot_zip(name="before-outage"))).id]
    await isolated_nats.stop()
    try:
        for i in range(3):
            ids.append((await upload(stack, auth, bot_zip(name=f"during-outage-{i}"))).id)
    finally:
        await isolated_nats.start()
    nc = await connect_nats(isolated_nats.url, name="outage-check")
    try:
        js = nc.jetstream()

        async def all_there() -> list[str] | None:
            info = await js.stream_info(EVENTS_STREAM)
            if info.state.messages < len(ids):
                return None
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(EVENTS_STREAM, seq)
                if message.subject == "the0.custom-bot.submitted":
                    found.append(orjson.loads(message.data)["data"]["id"])
            return found if len(found) >= len(ids) else None

        found = await eventually(all_there, timeout=20)
        await asyncio.sleep(1.5)  # a relay poll later: still no duplicates
        assert sorted(await all_there() or []) == sorted(ids) == sorted(found)
    finally:
        await nc.close()
