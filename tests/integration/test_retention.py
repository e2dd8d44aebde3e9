"""Retention (retention.py): a large seeded outbox shrinks to its live rows; every table is pruned by
its own window; one replica prunes at a time; the relay's index covers only the unsent rows."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from the0.server.db.engine import create_engine
from the0.server.retention import RETENTION_LOCK_KEY, Retention
from the0.server.settings import Settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SEEDED = 100_000
UNSENT = 500
RECENT = 1_500


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def settings() -> Settings:
    return dataclasses.replace(Settings(), outbox_retention_seconds=86400.0)


async def count(engine: AsyncEngine, table: str, where: str = "1=1") -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table} WHERE {where}")) or 0)


async def seed_outbox(engine: AsyncEngine) -> None:
    """SEEDED rows: most published two days ago, RECENT published an hour ago, UNSENT never."""
    old, recent = NOW - timedelta(days=2), NOW - timedelta(hours=1)
    async with engine.begin() as conn:
        # One statement from generate_series: 100k rows in well under a second.
        await conn.execute(text(
            "INSERT INTO event_outbox (id, type, data, created_at, published_at) "
            "SELECT 'evt-' || i, 'bot.updated', '{}'::json, :old, "
            "CASE WHEN i < :unsent THEN NULL WHEN i < :unsent + :recent THEN CAST(:recent_at AS timestamptz) "
            "ELSE CAST(:old AS timestamptz) END FROM generate_series(0, :n - 1) AS i"
        ), {"old": old, "recent_at": recent, "unsent": UNSENT, "recent": RECENT, "n": SEEDED})


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_large_outbox_shrinks_to_its_live_rows(engine: AsyncEngine) -> None:
    await seed_outbox(engine)
    assert await count(engine, "event_outbox") == SEEDED
    removed = await Retention(engine, settings(), clock=lambda: NOW).prune_once()
    assert removed is not None
    assert removed["outbox"] == SEEDED - UNSENT - RECENT
    # Unsent events are never touched, whatever their age; recently published ones stay their day.
    assert await count(engine, "event_outbox", "published_at IS NULL") == UNSENT
    assert await count(engine, "event_outbox") == UNSENT + RECENT
    again = await Retention(engine, settings(), clock=lambda: NOW).prune_once()
    assert again is not None and again["outbox"] == 0


async def test_the_relay_reads_through_the_partial_index(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            definition = await conn.scalar(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_event_outbox_unpublished_seq'"))
        else:
            definition = await conn.scalar(text(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_event_outbox_unpublished_seq'"))
    assert definition is not None and "published_at IS NULL" in definition


async def test_every_table_is_pruned_by_its_window(engine: AsyncEngine) -> None:
    user = str(uuid.uuid4())
    long_ago, lately = NOW - timedelta(days=30), NOW - timedelta(minutes=5)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO users (id, email, username, password_hash, first_name, last_name, role, active, "
            "created_at, updated_at) VALUES (:id, :e, :u, 'x', '', '', 'user', true, :t, :t)"
        ), {"id": user, "e": f"{user}@example.com", "u": user[:20], "t": long_ago})
        for name, when in (("old", long_ago), ("new", lately)):
            await conn.execute(text("INSERT INTO processed_events (id, type, processed_at) VALUES (:i, 't', :t)"),
                               {"i": name, "t": when})
            await conn.execute(text("INSERT INTO bot_requests (owner_id, method, request_id, bot_id, create_time) "
                                    "VALUES (:o, 'create', :r, 'b', :t)"), {"o": user, "r": name, "t": when})
            await conn.execute(text("INSERT INTO backtest_requests (owner_id, request_id, backtest_id, create_time) "
                                    "VALUES (:o, :r, 'b', :t)"), {"o": user, "r": name, "t": when})
        # A revoked session long ago; a session whose only token expired long ago; a live one.
        for sid, revoked, expires in (("s-revoked", long_ago, NOW + timedelta(days=1)),
                                      ("s-expired", None, long_ago),
                                      ("s-live", None, NOW + timedelta(days=20))):
            await conn.execute(text("INSERT INTO sessions (id, user_id, created_at, revoked_at) "
                                    "VALUES (:s, :u, :t, :r)"), {"s": sid, "u": user, "t": long_ago, "r": revoked})
            await conn.execute(text("INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at) "
                                    "VALUES (:i, :s, :h, :t, :e)"),
                               {"i": f"rt-{sid}", "s": sid, "h": sid.ljust(64, "0"), "t": long_ago, "e": expires})
    removed = await Retention(engine, settings(), clock=lambda: NOW).prune_once()
    assert removed is not None
    assert (removed["processed_events"], removed["bot_request_ids"], removed["backtest_request_ids"]) == (1, 1, 1)
    assert removed["refresh_tokens"] == 1
    assert removed["sessions"] == 2
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT id FROM processed_events"))).scalars().all() == ["new"]
        sessions = (await conn.execute(text("SELECT id FROM sessions"))).scalars().all()
        tokens = (await conn.execute(text("SELECT id FROM refresh_tokens"))).scalars().all()
    assert sessions == ["s-live"] and tokens == ["rt-s-live"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_one_replica_prunes_at_a_time(engine: AsyncEngine, database_url: str) -> None:
    other_replica = create_engine(database_url)
    try:
        async with other_replica.connect() as holder:
            assert await holder.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETENTION_LOCK_KEY})
            assert await Retention(engine, settings(), clock=lambda: NOW).prune_once() is None
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK_KEY})
        assert await Retention(engine, settings(), clock=lambda: NOW).prune_once() is not None
    finally:
        await other_replica.dispose()


