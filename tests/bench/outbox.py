"""Outbox relay throughput to a real NATS JetStream (target >= 1,000 events/s): rows are
committed first, then the relay publishes them in batches (publish_async) and marks them sent."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

EVENTS = 20_000


async def run() -> float:
    from the0.devtools.embedded.nats_server import EmbeddedNats
    from the0.server.db.engine import create_engine, session_factory
    from the0.server.db.migrate import upgrade_to_head
    from the0.server.events.nats_connection import connect_nats, ensure_stream
    from the0.server.events.outbox import Outbox
    from the0.server.events.relay import OutboxRelay

    work = Path(tempfile.mkdtemp(prefix="the0-bench-outbox-"))
    url = f"sqlite:///{work / 'outbox.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    nats = EmbeddedNats(work / "nats")
    await nats.start()
    client = await connect_nats(nats.url)
    try:
        await ensure_stream(client.jetstream())
        sessions, outbox = session_factory(engine), Outbox()
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            for i in range(EVENTS):
                outbox.add(session, "bench.happened", {"n": i, "payload": "x" * 200})
        write_s = time.perf_counter() - started
        relay = OutboxRelay(sessions, outbox, lambda: client, batch_size=500)
        started = time.perf_counter()
        sent = 0
        while sent < EVENTS:
            sent += await relay.publish_pending()
        relay_s = time.perf_counter() - started
        info = await client.jetstream().stream_info("THE0_EVENTS")
    finally:
        await client.close()
        await nats.stop()
        await engine.dispose()
    rate = EVENTS / relay_s
    print(f"\n== outbox relay ({EVENTS} events of ~300 B, SQLite, batches of 500, embedded NATS)")
    print(f"write {EVENTS} outbox rows in one transaction: {write_s:.2f} s")
    print(f"relay: {relay_s:.2f} s = {rate:,.0f} events/s (target >= 1,000); stream holds {info.state.messages}")
    return rate / 1000
