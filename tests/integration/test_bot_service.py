"""The bots domain on a real database (SQLite and PostgreSQL): rules, lifecycle, events, paging, watch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import orjson
import pytest
from sqlalchemy import insert

from tests.integration.test_bots_support import (
    add_custom_bot,
    add_user,
    bot_config,
    bots_domain,
    outbox_events,
    set_custom_bot_state,
)
from the0.server.bots.events import BotEventHandlers
from the0.server.bots.models import BotRow
from the0.server.errors import ApiError
from the0.server.events.consumer import EventConsumers, Outcome
from the0.server.events.envelope import Envelope
from the0.server.events.watch_hub import Heartbeat


@pytest.fixture
async def domain(database_url):
    async with bots_domain(database_url, heartbeat_seconds=0.3) as domain:
        yield domain


@pytest.fixture
async def alice(domain):
    user = await add_user(domain.sessions)
    await add_custom_bot(domain.sessions, user)
    return user


async def api_error(awaitable) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await awaitable
    return caught.value


def consumer(domain) -> tuple[EventConsumers, BotEventHandlers]:
    consumers = EventConsumers(domain.sessions, lambda: None)
    handlers = BotEventHandlers(domain.hub)
    handlers.register(consumers)
    return consumers, handlers


async def deliver(domain, event_type: str, data: dict, *, event_id: str | None = None) -> Outcome:
    consumers, handlers = consumer(domain)
    handler = {
        "bot.execution.started": handlers.execution_started,
        "bot.execution.completed": handlers.execution_completed,
        "bot.execution.failed": handlers.execution_failed,
    }[event_type]
    envelope = Envelope(type=event_type, data=data, id=event_id or str(uuid.uuid4()))
    return await consumers.handle(envelope.to_json(), event_type, handler)


# -- create and config rules ---------------------------------------------------------------------


async def test_create_makes_a_draft_and_publishes_what_a_runtime_needs(domain, alice):
    bot = await domain.service.create(alice, name="Mine", config=bot_config())
    assert (bot.state, bot.name, bot.owner_id) == ("DRAFT", "Mine", alice)
    assert bot.etag
    [event] = await outbox_events(domain.sessions, bot.id)
    assert event.type == "bot.created"
    assert event.data["ownerId"] == alice and event.data["config"]["symbol"] == "BTCUSD"
    custom = event.data["customBot"]
    assert custom["runtime"] == "python3.11" and custom["entrypoints"] == {"bot": "main.py"}
    assert custom["objectKey"].startswith(f"{alice}/my-bot/1.0.0/") and custom["bucket"] == "custom-bots"


async def test_config_rules_against_real_custom_bots(domain, alice):
    await add_custom_bot(domain.sessions, alice, version="1.1.0", state="PENDING_REVIEW")
    cases = [
        (bot_config(kind="realtime"), grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID"),
        (bot_config(version="9.0.0"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (bot_config(name="nobody-bot"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (bot_config(version="1.1.0"), grpc.StatusCode.FAILED_PRECONDITION, "CUSTOM_BOT_NOT_APPROVED"),
        (bot_config(schedule="99 * * * *"), grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID"),
        (
            {k: v for k, v in bot_config().items() if k != "schedule"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONFIG_INVALID",
        ),
    ]
    for config, code, reason in cases:
        error = await api_error(domain.service.create(alice, name="x", config=config))
        assert (error.code, error.reason) == (code, reason), config
    error = await api_error(
        domain.service.create(
            alice, name="x", config=bot_config(quantity=0, symbol="x", limits={"max": 11}, surprise=1)
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert [v.field for v in error.violations] == [
        "config.limits.max",
        "config.quantity",
        "config.surprise",
        "config.symbol",
    ]
    assert await outbox_events(domain.sessions) == []


async def test_another_users_custom_bot_cannot_be_used(domain, alice):
    mallory = await add_user(domain.sessions)
    error = await api_error(domain.service.create(mallory, name="x", config=bot_config()))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_a_retried_create_returns_the_first_bot_and_creates_nothing(domain, alice):
    first = await domain.service.create(alice, name="a", config=bot_config(), request_id="req-1")
    again = await domain.service.create(alice, name="b", config=bot_config(), request_id="req-1")
    racing = await asyncio.gather(
        *(domain.service.create(alice, name="c", config=bot_config(), request_id="req-2") for _ in range(4))
    )
    assert again.id == first.id and again.name == "a"
    assert len({b.id for b in racing}) == 1
    page = await domain.service.list(alice, state=None, requested_page_size=0, page_token="")
    assert len(page.bots) == 2
    assert len(await outbox_events(domain.sessions)) == 2


# -- reads ----------------------------------------------------------------------------------------


async def test_list_is_newest_first_keyset_paged_and_filtered(domain, alice):
    base = datetime.now(UTC)
    async with domain.sessions() as session, session.begin():
        await session.execute(
            insert(BotRow),
            [
                {
                    "id": f"{i:04d}-{uuid.uuid4()}"[:36],
                    "owner_id": alice,
                    "name": f"b{i}",
                    "config": bot_config(),
                    "state": "RUNNING" if i % 3 == 0 else "DRAFT",
                    "custom_bot_id": "c",
                    "etag": f"e{i}",
                    "create_time": base - timedelta(seconds=i // 2),
                    "update_time": base,
                }
                for i in range(25)
            ],
        )
    seen, token = [], ""
    while True:
        page = await domain.service.list(alice, state=None, requested_page_size=7, page_token=token)
        seen.extend(page.bots)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 25 and len({b.id for b in seen}) == 25
    keys = [(b.create_time, b.id) for b in seen]
    assert keys == sorted(keys, reverse=True)
    running = await domain.service.list(alice, state="RUNNING", requested_page_size=200, page_token="")
    assert {b.name for b in running.bots} == {f"b{i}" for i in range(0, 25, 3)}
    first = await domain.service.list(alice, state=None, requested_page_size=7, page_token="")
    error = await api_error(
        domain.service.list(alice, state="RUNNING", requested_page_size=7, page_token=first.next_page_token)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    mallory = await add_user(domain.sessions)
    assert (await domain.service.list(mallory, state=None, requested_page_size=0, page_token="")).bots == []


# -- update and etags -----------------------------------------------------------------------------


async def test_update_revalidates_changes_the_etag_and_checks_it(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    renamed = await domain.service.update(alice, bot.id, name="b", config=None, etag=bot.etag)
    assert renamed.name == "b" and renamed.config == bot.config and renamed.etag != bot.etag
    error = await api_error(domain.service.update(alice, bot.id, name="c", config=None, etag=bot.etag))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    error = await api_error(domain.service.update(alice, bot.id, name=None, config=bot_config(quantity=-1)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    updated = await domain.service.update(alice, bot.id, name=None, config=bot_config(quantity=7))
    assert updated.config["quantity"] == 7
    error = await api_error(domain.service.delete(alice, bot.id, etag=bot.etag))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    types = [e.type for e in await outbox_events(domain.sessions, bot.id)]
    assert types == ["bot.created", "bot.updated", "bot.updated"]


async def test_concurrent_writes_cannot_both_win(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    results = await asyncio.gather(
        *(domain.service.deploy(alice, bot.id) for _ in range(5)), return_exceptions=True
    )
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    assert len(succeeded) == 1
    for failure in (r for r in results if isinstance(r, BaseException)):
        assert isinstance(failure, ApiError) and failure.reason in ("INVALID_STATE", "ETAG_MISMATCH")
    types = [e.type for e in await outbox_events(domain.sessions, bot.id)]
    assert types.count("bot.deploy-requested") == 1


# -- lifecycle ------------------------------------------------------------------------------------


async def test_the_whole_lifecycle_with_runtime_events(domain, alice):
    service = domain.service
    bot = await service.create(alice, name="a", config=bot_config())
    error = await api_error(service.stop(alice, bot.id))
    assert (error.code, error.reason, error.metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
        "DRAFT",
    )
    deploying = await service.deploy(alice, bot.id, request_id="d-1")
    assert deploying.state == "DEPLOYING"
    assert (await service.deploy(alice, bot.id, request_id="d-1")).id == bot.id  # retry: no second effect
    error = await api_error(service.deploy(alice, bot.id, request_id="d-2"))
    assert (error.code, error.reason, error.metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
        "DEPLOYING",
    )

    started = {"botId": bot.id, "executionId": "x1", "startedAt": "2026-01-01T00:00:00Z"}
    assert await deliver(domain, "bot.execution.started", started, event_id="ev-1") is Outcome.APPLIED
    assert await deliver(domain, "bot.execution.started", started, event_id="ev-1") is Outcome.DUPLICATE
    running = await service.get(alice, bot.id)
    assert running.state == "RUNNING" and running.last_execution["state"] == "RUNNING"

    completed = {
        "botId": bot.id,
        "executionId": "x1",
        "completedAt": "2026-01-01T00:01:00Z",
        "result": {"pnl": 12.5, "trades": 3.0},
    }
    assert await deliver(domain, "bot.execution.completed", completed) is Outcome.APPLIED
    after = await service.get(alice, bot.id)
    assert after.state == "RUNNING"  # scheduled: waits for its next run
    assert after.last_execution == {
        "id": "x1",
        "state": "COMPLETED",
        "startTime": "2026-01-01T00:00:00+00:00",
        "endTime": "2026-01-01T00:01:00+00:00",
        "result": {"pnl": 12.5, "trades": 3},
    }
    # A late "started" of the finished execution is stale.
    assert await deliver(domain, "bot.execution.started", started) is Outcome.DROPPED

    assert (await service.stop(alice, bot.id)).state == "STOPPING"
    await deliver(domain, "bot.execution.completed", completed | {"executionId": "x2"})
    assert (await service.get(alice, bot.id)).state == "STOPPED"

    # A redeploy after an update runs the new config.
    await service.update(alice, bot.id, name=None, config=bot_config(quantity=9))
    await service.deploy(alice, bot.id)
    await deliver(domain, "bot.execution.failed", {"botId": bot.id, "executionId": "x3", "error": "boom"})
    failed = await service.get(alice, bot.id)
    assert (failed.state, failed.error, failed.last_execution["error"]) == ("FAILED", "boom", "boom")
    events = await outbox_events(domain.sessions, bot.id)
    deploys = [e for e in events if e.type == "bot.deploy-requested"]
    assert [d.data["config"]["quantity"] for d in deploys] == [2, 9]
    assert [e.type for e in events] == [
        "bot.created",
        "bot.deploy-requested",
        "bot.stop-requested",
        "bot.updated",
        "bot.deploy-requested",
    ]
    assert (await service.deploy(alice, bot.id)).state == "DEPLOYING"  # FAILED can be deployed again


async def test_realtime_bots_stop_when_their_execution_completes(domain, alice):
    await add_custom_bot(domain.sessions, alice, name="live-bot", kind="realtime")
    config = bot_config(name="live-bot", kind="realtime")
    bot = await domain.service.create(alice, name="a", config=config)
    await domain.service.deploy(alice, bot.id)
    # "completed" overtaking "started" (separate consumers) still lands in a sensible state.
    await deliver(domain, "bot.execution.completed", {"botId": bot.id, "executionId": "x1"})
    assert (await domain.service.get(alice, bot.id)).state == "STOPPED"


async def test_nonsensical_or_unknown_events_are_dropped(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    for event_type, data in [
        ("bot.execution.started", {"botId": bot.id, "executionId": "x"}),  # DRAFT: never asked to run
        ("bot.execution.started", {"botId": "no-such-bot", "executionId": "x"}),
        ("bot.execution.started", {"executionId": "x"}),
        ("bot.execution.failed", {"botId": bot.id}),
        ("bot.execution.completed", {"botId": bot.id, "executionId": "x", "result": [1]}),
    ]:
        assert await deliver(domain, event_type, data) is Outcome.DROPPED, data
    consumers, handlers = consumer(domain)
    assert (
        await consumers.handle(b"not json", "bot.execution.started", handlers.execution_started)
        is Outcome.DROPPED
    )
    assert (await domain.service.get(alice, bot.id)).state == "DRAFT"


async def test_deploy_needs_the_version_still_approved(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    await set_custom_bot_state(domain.sessions, bot.custom_bot_id, "DECLINED")
    error = await api_error(domain.service.deploy(alice, bot.id))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CUSTOM_BOT_NOT_APPROVED")


async def test_deleting_a_running_bot_requests_a_stop_first(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    await domain.service.deploy(alice, bot.id)
    await domain.service.delete(alice, bot.id)
    types = [e.type for e in await outbox_events(domain.sessions, bot.id)]
    assert types == ["bot.created", "bot.deploy-requested", "bot.stop-requested", "bot.deleted"]
    error = await api_error(domain.service.get(alice, bot.id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_every_operation_on_another_users_bot_is_not_found(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    mallory = await add_user(domain.sessions)
    service = domain.service
    for call in (
        service.get(mallory, bot.id),
        service.update(mallory, bot.id, name="x", config=None),
        service.delete(mallory, bot.id),
        service.deploy(mallory, bot.id),
        service.stop(mallory, bot.id),
        anext(service.watch(mallory, bot.id)),
    ):
        error = await api_error(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert (await service.get(alice, bot.id)).state == "DRAFT"


# -- watch ----------------------------------------------------------------------------------------


async def test_watch_sends_the_state_each_change_heartbeats_and_ends_after_delete(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    stream = domain.service.watch(alice, bot.id)
    first = await anext(stream)
    assert first.state == "DRAFT"
    await domain.service.deploy(alice, bot.id)
    assert (await anext(stream)).state == "DEPLOYING"
    assert isinstance(await asyncio.wait_for(anext(stream), 2), Heartbeat)
    await deliver(domain, "bot.execution.started", {"botId": bot.id, "executionId": "x"})
    item = await asyncio.wait_for(anext(stream), 2)
    while isinstance(item, Heartbeat):
        item = await asyncio.wait_for(anext(stream), 2)
    assert item.state == "RUNNING"
    await domain.service.delete(alice, bot.id)
    items = [item async for item in stream]
    assert items[-1].id == bot.id and type(items[-1]).__name__ == "BotDeleted"


async def test_event_data_is_json(domain, alice):
    bot = await domain.service.create(alice, name="a", config=bot_config())
    [event] = await outbox_events(domain.sessions, bot.id)
    assert orjson.loads(orjson.dumps(event.data))["botId"] == bot.id
