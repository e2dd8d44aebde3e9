"""Execution history on a real database: one row per (bot, execution), pages, owner scope, retention."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.integration.test_bots_support import add_custom_bot, add_user, bot_config, bots_domain
from the0.server.bots.events import BotEventHandlers
from the0.server.bots.executions import BotExecutionRow, BotExecutions
from the0.server.errors import ApiError
from the0.server.events.consumer import EventConsumers, Outcome
from the0.server.events.envelope import Envelope
from the0.server.pagination import PageTokens
from the0.server.request_context import caller_id_var


@pytest.fixture
async def domain(database_url):
    async with bots_domain(database_url) as domain:
        yield domain


@pytest.fixture
async def alice(domain):
    user = await add_user(domain.sessions)
    await add_custom_bot(domain.sessions, user)
    return user


def history(domain, *, retention_days: int = 30, now: datetime | None = None) -> BotExecutions:
    return BotExecutions(
        sessions=domain.sessions,
        page_tokens=PageTokens(b"test-secret"),
        retention=timedelta(days=retention_days),
        clock=(lambda: now) if now is not None else (lambda: datetime.now(UTC)),
    )


async def deliver(domain, event_type: str, data: dict, *, event_id: str | None = None,
                  max_per_bot: int = 1000) -> Outcome:
    consumers = EventConsumers(domain.sessions, lambda: None)
    handlers = BotEventHandlers(domain.hub, max_executions_per_bot=max_per_bot)
    handler = {
        "bot.execution.started": handlers.execution_started,
        "bot.execution.completed": handlers.execution_completed,
        "bot.execution.failed": handlers.execution_failed,
    }[event_type]
    envelope = Envelope(type=event_type, data=data, id=event_id or str(uuid.uuid4()))
    return await consumers.handle(envelope.to_json(), event_type, handler)


async def running_bot(domain, owner: str) -> str:
    bot = await domain.service.create(owner, name="a", config=bot_config())
    await domain.service.deploy(owner, bot.id)
    return bot.id


async def rows(domain, bot_id: str) -> list[BotExecutionRow]:
    async with domain.sessions() as session:
        return list(await session.scalars(select(BotExecutionRow).where(BotExecutionRow.bot_id == bot_id)))


def at(minute: int) -> str:
    return (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)).isoformat()


async def test_started_then_completed_and_redeliveries_give_one_row(domain, alice):
    bot_id = await running_bot(domain, alice)
    started = {"botId": bot_id, "executionId": "x1", "startedAt": at(0)}
    completed = {"botId": bot_id, "executionId": "x1", "completedAt": at(1), "result": {"pnl": 2.5}}
    assert await deliver(domain, "bot.execution.started", started, event_id="e1") is Outcome.APPLIED
    assert await deliver(domain, "bot.execution.started", started, event_id="e1") is Outcome.DUPLICATE
    assert await deliver(domain, "bot.execution.completed", completed, event_id="e2") is Outcome.APPLIED
    # A redelivery under a new event id (a runtime that retried its publish) merges, too.
    assert await deliver(domain, "bot.execution.completed", completed, event_id="e3") is Outcome.APPLIED
    [row] = await rows(domain, bot_id)
    assert (row.execution_id, row.state, row.result) == ("x1", "COMPLETED", {"pnl": 2.5})
    assert row.start_time == datetime.fromisoformat(at(0)) and row.end_time == datetime.fromisoformat(at(1))


async def test_completed_before_started_gives_one_finished_row(domain, alice):
    bot_id = await running_bot(domain, alice)
    completed = {"botId": bot_id, "executionId": "x1", "completedAt": at(1), "startedAt": at(0)}
    assert await deliver(domain, "bot.execution.completed", completed) is Outcome.APPLIED
    # The late start is stale for the bot (dropped whole), and the history stays finished.
    started = {"botId": bot_id, "executionId": "x1", "startedAt": at(0)}
    assert await deliver(domain, "bot.execution.started", started) is Outcome.DROPPED
    [row] = await rows(domain, bot_id)
    assert (row.state, row.start_time) == ("COMPLETED", datetime.fromisoformat(at(0)))


async def test_a_failure_without_an_execution_id_still_gets_a_row(domain, alice):
    bot_id = await running_bot(domain, alice)
    failed = {"botId": bot_id, "error": "image not found"}
    assert await deliver(domain, "bot.execution.failed", failed, event_id="ev-fail") is Outcome.APPLIED
    [row] = await rows(domain, bot_id)
    assert (row.execution_id, row.state, row.error) == ("ev-fail", "FAILED", "image not found")


async def test_pages_are_newest_first_and_owner_scoped(domain, alice):
    bot_id = await running_bot(domain, alice)
    for minute in range(5):
        await deliver(domain, "bot.execution.started", {"botId": bot_id, "executionId": f"x{minute}",
                                                         "startedAt": at(minute)})
    service = history(domain)
    token = caller_id_var.set(alice)
    try:
        first = await service.list(alice, bot_id, requested_page_size=2, page_token="")
        second = await service.list(alice, bot_id, requested_page_size=2, page_token=first.next_page_token)
        third = await service.list(alice, bot_id, requested_page_size=2, page_token=second.next_page_token)
    finally:
        caller_id_var.reset(token)
    assert [e.id for e in first.executions + second.executions + third.executions] == [
        "x4", "x3", "x2", "x1", "x0"
    ]
    assert third.next_page_token == ""

    mallory = await add_user(domain.sessions)
    with pytest.raises(ApiError) as caught:
        await service.list(mallory, bot_id, requested_page_size=0, page_token="")
    assert caught.value.reason == "NOT_FOUND"


async def test_a_bot_keeps_at_most_its_cap(domain, alice):
    bot_id = await running_bot(domain, alice)
    for minute in range(5):
        await deliver(domain, "bot.execution.started", {"botId": bot_id, "executionId": f"x{minute}",
                                                         "startedAt": at(minute)}, max_per_bot=3)
    assert sorted(r.execution_id for r in await rows(domain, bot_id)) == ["x2", "x3", "x4"]


async def test_retention_prunes_old_executions_in_batches(domain, alice, monkeypatch):
    from the0.server.bots import executions

    monkeypatch.setattr(executions, "PRUNE_BATCH", 2)
    bot_id = await running_bot(domain, alice)
    for minute in range(5):
        await deliver(domain, "bot.execution.started", {"botId": bot_id, "executionId": f"x{minute}",
                                                         "startedAt": at(minute * 24 * 60)})
    # Now is day 5 and the retention 2 days: days 0, 1 and 2 go, 3 and 4 stay.
    removed = await history(domain, retention_days=2, now=datetime.fromisoformat(at(5 * 24 * 60))).prune_once()
    assert removed == 3
    assert sorted(r.execution_id for r in await rows(domain, bot_id)) == ["x3", "x4"]
    async with domain.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(BotExecutionRow)) == 2
