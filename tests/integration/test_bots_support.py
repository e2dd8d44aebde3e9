"""Helpers for the bot tests (no tests here): users, approved custom-bot versions, the bots domain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.fixtures.server import TEST_SECRETS_KEYS
from the0.server.bots.service import BotService
from the0.server.custom_bots.catalog import CustomBotTableCatalog
from the0.server.custom_bots.models import CustomBotRow
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.models import UserRow
from the0.server.events.models import OutboxRow
from the0.server.events.outbox import Outbox
from the0.server.events.watch_hub import WatchHub
from the0.server.keys import key_ring
from the0.server.pagination import PageTokens
from the0.server.secrets.box import ConfigSecrets

BOT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "symbol": {"type": "string", "minLength": 3},
        "quantity": {"type": "integer", "minimum": 1},
        "limits": {"type": "object", "properties": {"max": {"type": "number", "maximum": 10}}},
    },
    "required": ["symbol", "quantity"],
    "additionalProperties": False,
}

TEST_CONFIG_SECRETS = ConfigSecrets(key_ring(TEST_SECRETS_KEYS, None))


def bot_config(
    name: str = "my-bot", kind: str = "scheduled", version: str = "1.0.0", **extra: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {"type": f"{kind}/{name}", "version": version, "symbol": "BTCUSD", "quantity": 2}
    if kind == "scheduled":
        config["schedule"] = "*/5 * * * *"
    return config | extra


async def add_user(sessions: async_sessionmaker[AsyncSession]) -> str:
    user_id = str(uuid.uuid4())
    async with sessions() as session, session.begin():
        session.add(
            UserRow(id=user_id, email=f"{user_id}@example.com", username=user_id[:20], password_hash="x")
        )
    return user_id


async def add_custom_bot(
    sessions: async_sessionmaker[AsyncSession],
    owner_id: str,
    *,
    name: str = "my-bot",
    version: str = "1.0.0",
    kind: str = "scheduled",
    state: str = "APPROVED",
    schema: dict[str, Any] | None = None,
    latest: bool = True,
) -> str:
    """A custom-bot version as the custom-bots domain stores it after upload and review."""
    custom_bot_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        if latest:
            for previous in await session.scalars(
                select(CustomBotRow).where(
                    CustomBotRow.owner_id == owner_id,
                    CustomBotRow.name == name,
                    CustomBotRow.is_latest.is_(True),
                )
            ):
                previous.is_latest = False
            await session.flush()
        session.add(
            CustomBotRow(
                id=custom_bot_id,
                owner_id=owner_id,
                name=name,
                version=version,
                is_latest=latest,
                state=state,
                manifest={
                    "name": name,
                    "version": version,
                    "type": kind,
                    "runtime": "python3.11",
                    "entrypoints": {"bot": "main.py"},
                    "schema": {"bot": "schema.json"},
                    "readme": "README.md",
                    "description": "",
                    "author": "tests",
                    "metadata": {},
                },
                readme="r" * 60,
                bot_schema=schema if schema is not None else BOT_SCHEMA,
                backtest_schema=None,
                object_key=f"{owner_id}/{name}/{version}/{'0' * 64}.zip",
                size_bytes=1,
                sha256="0" * 64,
                etag="e",
                created_at=now,
                updated_at=now,
            )
        )
    return custom_bot_id


async def set_custom_bot_state(
    sessions: async_sessionmaker[AsyncSession], custom_bot_id: str, state: str
) -> None:
    async with sessions() as session, session.begin():
        row = await session.get(CustomBotRow, custom_bot_id)
        assert row is not None
        row.state = state


async def outbox_events(
    sessions: async_sessionmaker[AsyncSession], bot_id: str | None = None
) -> list[OutboxRow]:
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(OutboxRow).where(OutboxRow.type.like("bot.%")).order_by(OutboxRow.seq)
            )
        )
    return [r for r in rows if bot_id is None or r.data.get("botId") == bot_id]


@dataclass
class BotsDomain:
    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    hub: WatchHub
    service: BotService


@asynccontextmanager
async def bots_domain(database_url: str, *, heartbeat_seconds: float = 25.0) -> AsyncIterator[BotsDomain]:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    outbox = Outbox()
    hub = WatchHub(None, heartbeat_seconds=heartbeat_seconds)
    service = BotService(
        sessions=sessions,
        outbox=outbox,
        watch_hub=hub,
        catalog=CustomBotTableCatalog(),
        page_tokens=PageTokens(b"test-secret"),
        secrets=TEST_CONFIG_SECRETS,
    )
    try:
        yield BotsDomain(sessions, outbox, hub, service)
    finally:
        await hub.stop()
        await engine.dispose()
