"""The development aid `make fake-runtime` really drives a backtest to COMPLETED with readable results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import pytest

from tests.e2e.test_backtests import create, read_all, register, states_until_done
from tests.integration.test_backtests_support import add_backtestable_bot
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2
from the0.devtools.fake_runtime import FakeRuntime
from the0.server.background import cancel_and_wait
from the0.server.events.nats_connection import EVENTS_STREAM


@pytest.fixture
async def sessions(database_url):
    from the0.server.db.engine import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def test_the_fake_runtime_completes_a_backtest_on_the_local_store(stack_factory, sessions, nats_client):
    stack = await stack_factory()  # the dev default: the local object-store folder
    user = await register(stack.channel)
    await add_backtestable_bot(sessions, user.id)
    runtime = FakeRuntime(nats_client, stack.app.object_store, delay=0, fail=False, bots=False,
                          durable_prefix=f"fake-{uuid.uuid4().hex[:8]}", only_new=True)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.sleep(0.3)  # its consumers exist before the event is published
        backtest = await create(user)
        watch = user.backtests.WatchBacktest(
            backtest_service_pb2.WatchBacktestRequest(id=backtest.id), metadata=user.metadata
        )
        assert (await states_until_done(watch))[-1] == backtest_pb2.BACKTEST_STATE_COMPLETED
        chunks = await read_all(user.backtests.GetBacktestResults(
            backtest_service_pb2.GetBacktestResultsRequest(id=backtest.id), metadata=user.metadata))
        analysis = json.loads(b"".join(c.data for c in chunks))
        assert analysis["generatedBy"].startswith("the0 fake runtime")
        assert set(analysis["metrics"]) == {"totalReturn", "sharpeRatio", "maxDrawdown", "winRate", "totalTrades"}
        logs = await read_all(user.backtests.GetBacktestLogs(
            backtest_service_pb2.GetBacktestLogsRequest(id=backtest.id), metadata=user.metadata))
        assert b"FAKE run" in b"".join(c.data for c in logs)
    finally:
        await cancel_and_wait(task)
        js = nats_client.jetstream()
        for event_type in ("backtest.created", "backtest.cancel-requested"):
            with contextlib.suppress(Exception):
                await js.delete_consumer(EVENTS_STREAM, runtime.durable(event_type))
