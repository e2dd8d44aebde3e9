"""Bot logs: how many lines a replica ingests per second, and what ingesting at 1,000 lines/s does
to GetBot's p99 (target ≤ 1.5× quiet). One server in a child process on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import orjson
from nats.aio.client import Client as NatsClient

from tests.bench.bots import register, seed, serve_api, throwaway_postgres
from tests.bench.harness import LoadResult, median_result, run_load, start_in_child
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc

BURST_LINES = 20_000
STEADY_RATE = 1_000  # lines per second, in batches of 50 (one message each)
BATCH = 50


async def _stored(database_url: str, bot_id: str) -> int:
    from sqlalchemy import text

    from the0.server.db.engine import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(text("SELECT count(*) FROM bot_log_lines WHERE bot_id = :id"), {"id": bot_id})
            return int(found or 0)
    finally:
        await engine.dispose()


def _message(start: int, count: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    return orjson.dumps({"lines": [{"time": now, "level": "info", "text": f"line {i}", "seq": i}
                                   for i in range(start, start + count)]})


async def ingest_rate(nc: NatsClient, database_url: str, bot_id: str) -> float:
    js = nc.jetstream()
    started = time.perf_counter()
    for start in range(0, BURST_LINES, BATCH):
        await js.publish(f"the0.bot.logs.{bot_id}", _message(start, BATCH))
    while await _stored(database_url, bot_id) < BURST_LINES:
        if time.perf_counter() - started > 120:
            raise RuntimeError("ingest did not finish within 120 s")
        await asyncio.sleep(0.05)
    return BURST_LINES / (time.perf_counter() - started)


async def publish_steadily(nc: NatsClient, bot_id: str, stop: asyncio.Event) -> None:
    js = nc.jetstream()
    seq = 10_000_000
    interval = BATCH / STEADY_RATE
    while not stop.is_set():
        tick = time.perf_counter()
        await js.publish(f"the0.bot.logs.{bot_id}", _message(seq, BATCH))
        seq += BATCH
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - tick)))


async def run(*, seconds: float = 3.0, rounds: int = 3, concurrency: int = 8) -> float:
    from the0.devtools.embedded.nats_server import EmbeddedNats
    from the0.server.db.migrate import upgrade_to_head

    with throwaway_postgres() as database_url, tempfile.TemporaryDirectory() as data_dir:
        await asyncio.to_thread(upgrade_to_head, database_url)
        nats = EmbeddedNats(Path(data_dir) / "nats")
        await nats.start()
        api_proc, api_port = start_in_child(serve_api, database_url, nats.url, data_dir)
        nc = NatsClient()
        await nc.connect(nats.url)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") as channel:
                caller = await register(channel)
                await seed(database_url, caller.user_id, 2)
                stub = bot_service_pb2_grpc.BotServiceStub(channel)
                noisy, quiet_bot = (await stub.ListBots(bot_service_pb2.ListBotsRequest(), metadata=caller.metadata)).bots
                rate = await ingest_rate(nc, database_url, noisy.id)

                request = bot_service_pb2.GetBotRequest(id=quiet_bot.id)
                call = lambda: stub.GetBot(request, metadata=caller.metadata)
                await run_load(call, concurrency=concurrency, seconds=0.5)
                quiet: list[LoadResult] = []
                busy: list[LoadResult] = []
                for _ in range(rounds):
                    quiet.append(await run_load(call, concurrency=concurrency, seconds=seconds))
                    stop = asyncio.Event()
                    publisher = asyncio.create_task(publish_steadily(nc, noisy.id, stop))
                    busy.append(await run_load(call, concurrency=concurrency, seconds=seconds))
                    stop.set()
                    await publisher
        finally:
            await nc.close()
            api_proc.terminate()
            api_proc.join(10)
            await nats.stop()
    quiet_p99 = median_result(quiet).percentile(0.99)
    busy_p99 = median_result(busy).percentile(0.99)
    ratio = busy_p99 / quiet_p99
    print("\n== bot logs")
    print(f"ingest: {rate:,.0f} lines/s (target >= 1,000 per replica)")
    print(f"GetBot p99 quiet {quiet_p99:.2f} ms, while ingesting {STEADY_RATE} lines/s {busy_p99:.2f} ms: "
          f"{ratio:.2f}x (target <= 1.5)")
    return ratio
