"""The backtests domain on a real database (SQLite and PostgreSQL): rules, lifecycle, events, results, paging."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from tests.integration.test_backtests_support import (
    add_backtestable_bot,
    backtest_config,
    backtests_domain,
    outbox_events,
)
from tests.integration.test_bots_support import add_user
from the0.server.backtests.service import BUCKET
from the0.server.errors import ApiError
from the0.server.events.consumer import Outcome
from the0.server.events.watch_hub import Heartbeat


@pytest.fixture
async def domain(database_url, tmp_path):
    async with backtests_domain(database_url, tmp_path / "objects", heartbeat_seconds=0.3) as domain:
        yield domain


@pytest.fixture
async def alice(domain):
    user = await add_user(domain.sessions)
    await add_backtestable_bot(domain.sessions, user)
    return user


async def api_error(awaitable) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await awaitable
    return caught.value


async def chunks_of(awaitable) -> bytes:
    stream = await awaitable
    async with contextlib.aclosing(stream):
        return b"".join([chunk async for chunk in stream])


# -- create --------------------------------------------------------------------------------------


async def test_create_is_pending_and_tells_the_runtime_everything(domain, alice):
    backtest = await domain.service.create(alice, name="  Q1 run ", config=backtest_config())
    assert (backtest.state, backtest.name, backtest.owner_id, backtest.summary) == ("PENDING", "Q1 run", alice, None)
    [event] = await outbox_events(domain.sessions, backtest.id)
    data = event.data
    assert event.type == "backtest.created"
    assert (data["ownerId"], data["name"], data["config"]["days"]) == (alice, "Q1 run", 30)
    assert (data["runtime"], data["entrypoint"]) == ("python3.11", "backtest.py")
    assert data["archive"]["bucket"] == "custom-bots"
    assert data["archive"]["objectKey"].startswith(f"{alice}/my-bot/1.0.0/")
    assert data["results"] == {
        "bucket": "backtests",
        "prefix": f"{backtest.id}/",
        "analysisKey": f"{backtest.id}/analysis.json",
        "logsKey": f"{backtest.id}/logs.txt",
    }
    assert data["customBot"]["id"] == backtest.custom_bot_id


async def test_a_retried_request_id_returns_the_first_backtest_and_creates_nothing(domain, alice):
    first = await domain.service.create(alice, name="a", config=backtest_config(), request_id="req-1")
    again = await domain.service.create(alice, name="b", config=backtest_config(days=3), request_id="req-1")
    assert again.id == first.id and again.name == "a"
    page = await domain.service.list(alice, state=None, requested_page_size=0, page_token="")
    assert [b.id for b in page.backtests] == [first.id]
    assert len(await outbox_events(domain.sessions, first.id)) == 1
    # Request ids are per owner.
    bob = await add_user(domain.sessions)
    await add_backtestable_bot(domain.sessions, bob)
    other = await domain.service.create(bob, name="a", config=backtest_config(), request_id="req-1")
    assert other.id != first.id


@pytest.mark.parametrize(
    ("setup", "config", "code", "reason", "fields"),
    [
        (None, backtest_config(days=0, extra=1), grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID",
         ["config.days", "config.extra"]),
        (None, {"type": "scheduled/my-bot", "version": "1.0.0"}, grpc.StatusCode.INVALID_ARGUMENT,
         "CONFIG_INVALID", ["config.days", "config.symbol"]),
        (None, {"version": "1.0.0"}, grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID", ["config.type"]),
        (None, backtest_config(version="9.9.9"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
        (None, backtest_config(name="nope-bot"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND", []),
        ({"version": "2.0.0", "state": "PENDING_REVIEW"}, backtest_config(version="2.0.0"),
         grpc.StatusCode.FAILED_PRECONDITION, "CUSTOM_BOT_NOT_APPROVED", []),
        ({"version": "3.0.0", "entrypoint": None}, backtest_config(version="3.0.0"),
         grpc.StatusCode.FAILED_PRECONDITION, "BACKTEST_NOT_SUPPORTED", []),
        ({"version": "4.0.0", "schema": None}, backtest_config(version="4.0.0"),
         grpc.StatusCode.FAILED_PRECONDITION, "BACKTEST_NOT_SUPPORTED", []),
    ],
    ids=["schema", "required", "type", "no-version", "no-bot", "unapproved", "no-entrypoint", "no-schema"],
)
async def test_config_errors(domain, alice, setup, config, code, reason, fields):
    if setup is not None:
        await add_backtestable_bot(domain.sessions, alice, **setup)
    error = await api_error(domain.service.create(alice, name="x", config=config))
    assert (error.code, error.reason) == (code, reason)
    assert sorted(v.field for v in error.violations) == fields


async def test_name_and_request_id_limits(domain, alice):
    error = await api_error(domain.service.create(alice, name=" ", config=backtest_config()))
    assert (error.code, error.reason, [v.field for v in error.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["backtest.name"])
    error = await api_error(domain.service.create(alice, name="x", config=backtest_config(), request_id="r" * 101))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


# -- lifecycle from events ------------------------------------------------------------------------


async def test_started_then_completed_and_duplicates_are_applied_once(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    started = {"backtestId": backtest.id, "startedAt": "2026-01-01T00:00:00Z"}
    assert await domain.deliver("backtest.started", started, event_id="s1") is Outcome.APPLIED
    assert await domain.deliver("backtest.started", started, event_id="s1") is Outcome.DUPLICATE
    running = await domain.service.get(alice, backtest.id)
    assert running.state == "RUNNING" and running.start_time.isoformat() == "2026-01-01T00:00:00+00:00"
    summary = {"totalReturn": 0.12, "sharpeRatio": 1.4, "maxDrawdown": -0.08, "winRate": 0.55, "totalTrades": 42.0}
    done = {"backtestId": backtest.id, "completedAt": "2026-01-01T00:10:00Z", "summary": summary}
    assert await domain.deliver("backtest.completed", done, event_id="c1") is Outcome.APPLIED
    assert await domain.deliver("backtest.completed", done, event_id="c1") is Outcome.DUPLICATE
    # Same content, another event id: it makes no sense any more, so it is dropped (acked).
    assert await domain.deliver("backtest.completed", done) is Outcome.DROPPED
    completed = await domain.service.get(alice, backtest.id)
    assert completed.state == "COMPLETED" and completed.summary == summary | {"totalTrades": 42}
    assert completed.end_time.isoformat() == "2026-01-01T00:10:00+00:00"
    assert completed.start_time == running.start_time


async def test_completed_before_started_completes_and_the_late_start_is_ignored(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    outcome = await domain.deliver("backtest.completed", {"backtestId": backtest.id, "summary": {"totalReturn": 1}})
    assert outcome is Outcome.APPLIED
    assert (await domain.service.get(alice, backtest.id)).state == "COMPLETED"
    assert await domain.deliver("backtest.started", {"backtestId": backtest.id}) is Outcome.DROPPED
    after = await domain.service.get(alice, backtest.id)
    assert after.state == "COMPLETED" and after.summary == {"totalReturn": 1}


async def test_failed_records_the_error(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    await domain.deliver("backtest.started", {"backtestId": backtest.id})
    assert await domain.deliver("backtest.failed", {"backtestId": backtest.id, "error": "no data"}) is Outcome.APPLIED
    failed = await domain.service.get(alice, backtest.id)
    assert (failed.state, failed.error) == ("FAILED", "no data") and failed.end_time is not None


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("backtest.started", {"backtestId": "00000000-0000-0000-0000-000000000000"}),
        ("backtest.started", {"backtestId": 5}),
        ("backtest.failed", {"backtestId": "{id}"}),
        ("backtest.completed", {"backtestId": "{id}", "summary": [1, 2]}),
        ("backtest.started", {"backtestId": "{id}", "startedAt": "yesterday"}),
    ],
    ids=["unknown", "not-a-string", "no-error", "summary-not-object", "bad-time"],
)
async def test_malformed_or_unknown_events_are_dropped(domain, alice, event_type, data):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    data = {k: (v.format(id=backtest.id) if isinstance(v, str) else v) for k, v in data.items()}
    assert await domain.deliver(event_type, data) is Outcome.DROPPED
    assert (await domain.service.get(alice, backtest.id)).state == "PENDING"


async def test_cancel_publishes_and_late_events_are_ignored(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    await domain.deliver("backtest.started", {"backtestId": backtest.id})
    cancelled = await domain.service.cancel(alice, backtest.id)
    assert cancelled.state == "CANCELLED" and cancelled.end_time is not None
    events = await outbox_events(domain.sessions, backtest.id)
    assert [e.type for e in events] == ["backtest.created", "backtest.cancel-requested"]
    assert events[1].data["ownerId"] == alice
    for event_type, data in (
        ("backtest.completed", {"backtestId": backtest.id, "summary": {"totalReturn": 1}}),
        ("backtest.failed", {"backtestId": backtest.id, "error": "killed"}),
        ("backtest.started", {"backtestId": backtest.id}),
    ):
        assert await domain.deliver(event_type, data) is Outcome.DROPPED
    after = await domain.service.get(alice, backtest.id)
    assert (after.state, after.summary, after.error) == ("CANCELLED", None, None)
    error = await api_error(domain.service.cancel(alice, backtest.id))
    assert (error.code, error.reason, error.metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE", "CANCELLED")
    assert "CANCELLED" in error.message


async def test_a_completed_backtest_cannot_be_cancelled(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    await domain.deliver("backtest.completed", {"backtestId": backtest.id})
    error = await api_error(domain.service.cancel(alice, backtest.id))
    assert (error.code, error.reason, error.metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE", "COMPLETED")


# -- results and logs -----------------------------------------------------------------------------


async def test_results_and_logs(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    error = await api_error(domain.service.open_results(alice, backtest.id))
    assert (error.code, error.reason, error.metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE", "PENDING")
    error = await api_error(domain.service.open_logs(alice, backtest.id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RESULTS_UNAVAILABLE")
    await domain.store.put_bytes(BUCKET, f"{backtest.id}/logs.txt", b"line 1\n", "text/plain")
    assert await chunks_of(domain.service.open_logs(alice, backtest.id)) == b"line 1\n"

    await domain.deliver("backtest.completed", {"backtestId": backtest.id})
    error = await api_error(domain.service.open_results(alice, backtest.id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RESULTS_UNAVAILABLE")
    await domain.store.put_bytes(BUCKET, f"{backtest.id}/analysis.json", b'{"metrics": [1,', "application/json")
    error = await api_error(domain.service.open_results(alice, backtest.id))
    assert (error.code, error.reason) == (grpc.StatusCode.DATA_LOSS, "RESULTS_UNAVAILABLE")
    analysis = b'{"metrics": {"totalReturn": 0.1}, "plots": [], "tables": []}'
    await domain.store.put_bytes(BUCKET, f"{backtest.id}/analysis.json", analysis, "application/json")
    assert await chunks_of(domain.service.open_results(alice, backtest.id, chunk_size=7)) == analysis


# -- owner scoping, paging, watch -----------------------------------------------------------------


async def test_another_users_backtest_does_not_exist_for_them(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    mallory = await add_user(domain.sessions)
    for call in (
        domain.service.get(mallory, backtest.id),
        domain.service.cancel(mallory, backtest.id),
        domain.service.open_results(mallory, backtest.id),
        domain.service.open_logs(mallory, backtest.id),
        anext(domain.service.watch(mallory, backtest.id)),
    ):
        error = await api_error(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    page = await domain.service.list(mallory, state=None, requested_page_size=0, page_token="")
    assert page.backtests == []


async def test_list_pages_newest_first_with_a_state_filter(domain, alice):
    made = [await domain.service.create(alice, name=f"b{i}", config=backtest_config()) for i in range(5)]
    await domain.deliver("backtest.started", {"backtestId": made[1].id})
    await domain.deliver("backtest.started", {"backtestId": made[3].id})
    seen, token = [], ""
    while True:
        page = await domain.service.list(alice, state=None, requested_page_size=2, page_token=token)
        seen.extend(b.id for b in page.backtests)
        token = page.next_page_token
        if not token:
            break
    assert seen == [b.id for b in reversed(made)]
    running = await domain.service.list(alice, state="RUNNING", requested_page_size=1, page_token="")
    assert [b.id for b in running.backtests] == [made[3].id]
    error = await api_error(
        domain.service.list(alice, state="PENDING", requested_page_size=1, page_token=running.next_page_token)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    error = await api_error(domain.service.list(alice, state=None, requested_page_size=-1, page_token=""))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_watch_sends_state_changes_heartbeats_and_ends_at_a_terminal_state(domain, alice):
    backtest = await domain.service.create(alice, name="x", config=backtest_config())
    stream = domain.service.watch(alice, backtest.id)
    seen = []
    async with asyncio.timeout(10):
        first = await anext(stream)
        assert first.state == "PENDING"
        assert isinstance(await anext(stream), Heartbeat)  # heartbeat interval is 0.3 s here
        await domain.deliver("backtest.started", {"backtestId": backtest.id})
        await domain.deliver("backtest.failed", {"backtestId": backtest.id, "error": "boom"})
        async for item in stream:
            if not isinstance(item, Heartbeat):
                seen.append(item.state)
    assert seen[-1] == "FAILED" and set(seen) <= {"RUNNING", "FAILED"}
