"""Helpers for the backtest tests (no tests here): custom bots with a backtest, the domain, events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.test_bots_support import add_custom_bot
from the0.server.backtests.events import BacktestEventHandlers
from the0.server.backtests.service import BacktestService
from the0.server.custom_bots.catalog import CustomBotTableCatalog
from the0.server.custom_bots.models import CustomBotRow
from the0.server.db.engine import create_engine, session_factory
from the0.server.events.consumer import EventConsumers, Outcome
from the0.server.events.envelope import Envelope
from the0.server.events.models import OutboxRow
from the0.server.events.outbox import Outbox
from the0.server.events.watch_hub import WatchHub
from the0.server.pagination import PageTokens
from the0.server.storage.local import LocalObjectStore
from the0.server.storage.object_store import ObjectStore

BACKTEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "symbol": {"type": "string", "minLength": 3},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["symbol", "days"],
    "additionalProperties": False,
}


def backtest_config(name: str = "my-bot", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"type": f"scheduled/{name}", "version": version, "symbol": "BTCUSD", "days": 30} | extra


async def add_backtestable_bot(
    sessions: async_sessionmaker[AsyncSession],
    owner_id: str,
    *,
    version: str = "1.0.0",
    state: str = "APPROVED",
    entrypoint: str | None = "backtest.py",
    schema: dict[str, Any] | None = BACKTEST_SCHEMA,
) -> str:
    """An approved custom-bot version with (by default) a backtest entrypoint and schema."""
    custom_bot_id = await add_custom_bot(sessions, owner_id, version=version, state=state)
    async with sessions() as session, session.begin():
        row = await session.get(CustomBotRow, custom_bot_id)
        assert row is not None
        manifest = dict(row.manifest)
        entrypoints = dict(manifest["entrypoints"])
        if entrypoint is not None:
            entrypoints["backtest"] = entrypoint
        manifest["entrypoints"] = entrypoints
        if schema is not None:
            manifest["schema"] = dict(manifest["schema"]) | {"backtest": "backtest-schema.json"}
        row.manifest = manifest
        row.backtest_schema = schema
    return custom_bot_id


async def outbox_events(sessions: async_sessionmaker[AsyncSession], backtest_id: str) -> list[OutboxRow]:
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(OutboxRow).where(OutboxRow.type.like("backtest.%")).order_by(OutboxRow.seq)
            )
        )
    return [r for r in rows if r.data.get("backtestId") == backtest_id]


@dataclass
class BacktestsDomain:
    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    hub: WatchHub
    store: ObjectStore
    service: BacktestService
    handlers: BacktestEventHandlers
    consumers: EventConsumers

    async def deliver(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None) -> Outcome:
        """Apply one inbound event exactly as the durable consumer would."""
        handler = {
            "backtest.started": self.handlers.started,
            "backtest.completed": self.handlers.completed,
            "backtest.failed": self.handlers.failed,
        }[event_type]
        envelope = Envelope(type=event_type, data=data, id=event_id or str(uuid.uuid4()))
        return await self.consumers.handle(envelope.to_json(), event_type, handler)


@asynccontextmanager
async def backtests_domain(
    database_url: str, store_dir: Path, *, heartbeat_seconds: float = 25.0, store: ObjectStore | None = None
) -> AsyncIterator[BacktestsDomain]:
    """The domain over ``database_url`` and ``store`` (by default a local folder store in ``store_dir``)."""
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    outbox = Outbox()
    hub = WatchHub(None, heartbeat_seconds=heartbeat_seconds)
    store = store if store is not None else LocalObjectStore(store_dir)
    service = BacktestService(
        sessions=sessions,
        outbox=outbox,
        watch_hub=hub,
        catalog=CustomBotTableCatalog(),
        page_tokens=PageTokens(b"test-secret"),
        object_store=store,
    )
    await service.prepare()
    handlers = BacktestEventHandlers(hub)
    consumers = EventConsumers(sessions, lambda: None)
    handlers.register(consumers)
    try:
        yield BacktestsDomain(sessions, outbox, hub, store, service, handlers, consumers)
    finally:
        await hub.stop()
        await engine.dispose()
