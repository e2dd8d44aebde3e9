"""Bots bench, on a throwaway PostgreSQL and embedded NATS, the server in a child process.

1. GetBot (auth + read cache; and with the cache off, from PostgreSQL) and a ListBots page of 50 vs an empty
   grpc.aio echo server, same run (targets: GetBot >= 0.5, stretch 0.7; ListBots >= 0.2).
2. ListBots latency: first page with 100 and with 100,000 bots for one user, and the 50th page
   with 100,000 (target: flat, max/min p50 within 1.5x). Rows are bulk-inserted directly.
3. 1,000 concurrent WatchBot streams on one process; a change reaches all of them
   (target p99 <= 250 ms); server memory per watcher from its RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf import field_mask_pb2
from sqlalchemy import insert

from tests.bench.harness import (
    BENCH_CALLER_LIMITS,
    LoadResult,
    median_result,
    report,
    run_load,
    start_in_child,
)
from tests.bench.interceptors import measure as measure_echo
from tests.bench.interceptors import serve_echo
from tests.fixtures.server import TEST_MAILER_KEYS, TEST_SECRETS_KEYS
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc

JWT_SECRET = "bench-secret-of-at-least-thirty-two-bytes-0123456789"
WATCHERS = 1000


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    import os

    from tests.fixtures.services import PG_BIN, _pg_run
    from the0.devtools.embedded.processes import free_port

    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="the0-bench-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    port, data = free_port(), base / "data"
    _pg_run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        as_root,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    _pg_run(
        [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w", "-o", options, "start"],
        as_root,
    )
    try:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute('CREATE DATABASE "bench"')
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/bench"
    finally:
        _pg_run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_root)
        shutil.rmtree(base, ignore_errors=True)


def serve_api(
    port_queue: mp.Queue, database_url: str, nats_url: str, data_dir: str, read_cache_seconds: float = 5.0
) -> None:
    async def main() -> None:
        from the0.server.app import build
        from the0.server.settings import Settings
        from the0.server.structured_logging import configure_logging

        configure_logging("INFO")
        settings = Settings(
            database_url=database_url,
            nats_url=nats_url,
            jwt_secret=JWT_SECRET,
            secrets_keys=TEST_SECRETS_KEYS, mailer_keys=TEST_MAILER_KEYS,
            grpc_host="127.0.0.1",
            grpc_port=0,
            data_dir=Path(data_dir),
            read_cache_seconds=read_cache_seconds,
            **BENCH_CALLER_LIMITS,
        )
        app = await build(settings)
        await app.start()
        # Production logging (JSON lines, one per RPC, to stderr) into /dev/null: its cost counts,
        # not the terminal's.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115, ASYNC230
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
        await app.nats.connected.wait()
        port_queue.put(app.port)
        await app.server.wait_for_termination()

    asyncio.run(main())


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclasses.dataclass
class Caller:
    user_id: str
    metadata: tuple[tuple[str, str], ...]


async def register(channel: grpc.aio.Channel) -> Caller:
    name = f"b{uuid.uuid4().hex[:12]}"
    tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
        auth_service_pb2.RegisterRequest(
            email=f"{name}@example.com", password="correct horse battery", username=name
        )
    )
    return Caller(tokens.user.id, (("authorization", f"Bearer {tokens.access_token}"),))


async def seed(database_url: str, owner_id: str, count: int) -> None:
    """Bulk-insert ``count`` bots for ``owner_id`` (plus its approved custom bot)."""
    from tests.integration.test_bots_support import add_custom_bot, bot_config
    from the0.server.bots.models import BotRow
    from the0.server.db.engine import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        custom_bot_id = await add_custom_bot(sessions, owner_id)
        base = datetime.now(UTC)
        config = bot_config()
        for start in range(0, count, 10_000):
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "owner_id": owner_id,
                    "name": f"bot {i}",
                    "config": config,
                    "state": "DRAFT",
                    "custom_bot_id": custom_bot_id,
                    "etag": uuid.uuid4().hex[:16],
                    "create_time": base - timedelta(milliseconds=i),
                    "update_time": base,
                }
                for i in range(start, min(count, start + 10_000))
            ]
            async with engine.begin() as conn:
                await conn.execute(insert(BotRow), rows)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE bots")
    finally:
        await engine.dispose()


GETBOT_TARGET, GETBOT_STRETCH, LIST_TARGET, HEALTH_TARGET = 0.5, 0.7, 0.2, 0.8


def verdict(ratio: float, target: float) -> str:
    return "✓" if ratio >= target else "✗"


async def reads_vs_echo(
    api_port: int, uncached_port: int, caller: Caller, bot_id: str, *, seconds: float, rounds: int, concurrency: int
) -> float:
    """GetBot from the read cache, GetBot from PostgreSQL, and a ListBots page of 50, each vs the echo server."""
    echo_proc, echo_port = start_in_child(serve_echo, False)
    echo = "empty echo server (baseline)"
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") as channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{uncached_port}") as uncached_channel,
        ):
            cached_stub = bot_service_pb2_grpc.BotServiceStub(channel)
            uncached_stub = bot_service_pb2_grpc.BotServiceStub(uncached_channel)
            get = bot_service_pb2.GetBotRequest(id=bot_id)
            page = bot_service_pb2.ListBotsRequest(page_size=50)
            health = health_service_pb2_grpc.HealthServiceStub(channel)
            health_request = health_service_pb2.GetHealthRequest()
            calls = {
                "GetBot (read cache)": lambda: cached_stub.GetBot(get, metadata=caller.metadata),
                "GetBot (PostgreSQL, cache off)": lambda: uncached_stub.GetBot(get, metadata=caller.metadata),
                "ListBots, page of 50 (PostgreSQL)": lambda: cached_stub.ListBots(page, metadata=caller.metadata),
                "GetHealth (checks at most 1 s old)": lambda: health.GetHealth(health_request),
            }
            results: dict[str, list[LoadResult]] = {echo: [], **{name: [] for name in calls}}
            for call in calls.values():
                await run_load(call, concurrency=concurrency, seconds=0.5)
            for _ in range(rounds):
                results[echo].append(await measure_echo(echo_port, seconds=seconds, concurrency=concurrency))
                for name, call in calls.items():
                    results[name].append(await run_load(call, concurrency=concurrency, seconds=seconds))
    finally:
        echo_proc.terminate()
    rows = {name: median_result(r) for name, r in results.items()}
    report(
        "Reads vs empty echo server",
        rows,
        baseline=echo,
        target=f"GetBot >= {GETBOT_TARGET} of baseline (stretch {GETBOT_STRETCH}); ListBots page of 50 >= {LIST_TARGET}",
    )
    base = rows[echo].throughput
    cached, uncached, listed, healthy = (rows[name].throughput / base for name in calls)
    print(f"GetBot (read cache) {cached:.2f} {verdict(cached, GETBOT_TARGET)} (>= {GETBOT_TARGET}; "
          f"stretch {GETBOT_STRETCH} {verdict(cached, GETBOT_STRETCH)}); "
          f"GetBot from PostgreSQL {uncached:.2f} {verdict(uncached, GETBOT_TARGET)}; "
          f"ListBots page of 50 {listed:.2f} {verdict(listed, LIST_TARGET)} (>= {LIST_TARGET}); "
          f"GetHealth {healthy:.2f} {verdict(healthy, HEALTH_TARGET)} (>= {HEALTH_TARGET})")
    return cached


async def list_latency(api_port: int, small: Caller, large: Caller, *, seconds: float) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") as channel:
        stub = bot_service_pb2_grpc.BotServiceStub(channel)
        token = ""
        for _ in range(49):
            page = await stub.ListBots(
                bot_service_pb2.ListBotsRequest(page_size=50, page_token=token), metadata=large.metadata
            )
            token = page.next_page_token
        variants = {
            "page 1, 100 bots": (small, ""),
            "page 1, 100,000 bots": (large, ""),
            "page 50, 100,000 bots": (large, token),
        }
        results: dict[str, LoadResult] = {}
        for name, (caller, page_token) in variants.items():
            request = bot_service_pb2.ListBotsRequest(page_size=50, page_token=page_token)
            call = lambda r=request, c=caller: stub.ListBots(r, metadata=c.metadata)
            await run_load(call, concurrency=4, seconds=0.5)
            results[name] = await run_load(call, concurrency=4, seconds=seconds)
    print("\n== ListBots latency (page size 50, 4 concurrent callers)")
    print(f"{'variant':<34}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, r in results.items():
        print(f"{name:<34}{r.throughput:>10.0f}{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}")
    p50s = [r.percentile(0.5) for r in results.values()]
    spread = max(p50s) / min(p50s)
    print(f"max/min p50: {spread:.2f}  target: <= 1.5")
    return spread


async def watchers(api_port: int, api_pid: int, caller: Caller, bot_id: str, *, changes: int = 5) -> float:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") for _ in range(10)]
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    ready = 0
    all_ready = asyncio.Event()
    names_seen: dict[int, set[str]] = {}

    async def watch(index: int) -> None:
        nonlocal ready
        stub = bot_service_pb2_grpc.BotServiceStub(channels[index % len(channels)])
        stream = stub.WatchBot(bot_service_pb2.WatchBotRequest(id=bot_id), metadata=caller.metadata)
        seen = names_seen.setdefault(index, set())
        first = True
        async for message in stream:
            if message.WhichOneof("event") != "bot":
                continue
            if first:
                first = False
                ready += 1
                if ready == WATCHERS:
                    all_ready.set()
                continue
            name = message.bot.name
            if name in sent_at and name not in seen:
                seen.add(name)
                latencies.append((time.perf_counter() - sent_at[name]) * 1000)

    try:
        rss_before = _rss_kib(api_pid)
        tasks = [asyncio.create_task(watch(i)) for i in range(WATCHERS)]
        async with asyncio.timeout(120):
            await all_ready.wait()
        await asyncio.sleep(1.0)
        rss_after = _rss_kib(api_pid)
        stub = bot_service_pb2_grpc.BotServiceStub(channels[0])
        for n in range(changes):
            name = f"change {n}"
            sent_at[name] = time.perf_counter()
            await stub.UpdateBot(
                bot_service_pb2.UpdateBotRequest(
                    bot=bot_pb2.Bot(id=bot_id, name=name),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                ),
                metadata=caller.metadata,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while sum(name in s for s in names_seen.values()) < WATCHERS:
                        await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    delivered = len(latencies)
    ordered = sorted(latencies) or [float("inf")]
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    per_watcher = (rss_after - rss_before) / WATCHERS
    print(f"\n== {WATCHERS} WatchBot streams on one process, {changes} changes")
    print(
        f"delivered {delivered}/{WATCHERS * changes}; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {ordered[-1]:.1f} ms; target: p99 <= 250 ms"
    )
    print(
        f"server RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB: {per_watcher:.1f} KiB per watcher"
    )
    return p99


async def run(*, seconds: float = 3.0, rounds: int = 3, concurrency: int = 32) -> float:
    from the0.devtools.embedded.nats_server import EmbeddedNats
    from the0.server.db.migrate import upgrade_to_head

    with throwaway_postgres() as database_url, tempfile.TemporaryDirectory() as data_dir:
        await asyncio.to_thread(upgrade_to_head, database_url)
        nats = EmbeddedNats(Path(data_dir) / "nats")
        await nats.start()
        api_proc, api_port = start_in_child(serve_api, database_url, nats.url, data_dir)
        uncached_proc, uncached_port = start_in_child(serve_api, database_url, nats.url, data_dir, 0.0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{api_port}") as channel:
                small, large, watcher = (
                    await register(channel),
                    await register(channel),
                    await register(channel),
                )
                await seed(database_url, small.user_id, 100)
                await seed(database_url, large.user_id, 100_000)
                await seed(database_url, watcher.user_id, 1)
                stub = bot_service_pb2_grpc.BotServiceStub(channel)
                [one] = (
                    await stub.ListBots(bot_service_pb2.ListBotsRequest(page_size=1), metadata=small.metadata)
                ).bots
                [watched] = (
                    await stub.ListBots(
                        bot_service_pb2.ListBotsRequest(page_size=1), metadata=watcher.metadata
                    )
                ).bots
            ratio = await reads_vs_echo(
                api_port, uncached_port, small, one.id, seconds=seconds, rounds=rounds, concurrency=concurrency
            )
            uncached_proc.terminate()
            uncached_proc.join(10)
            spread = await list_latency(api_port, small, large, seconds=seconds)
            p99 = await watchers(api_port, api_proc.pid, watcher, watched.id)
        finally:
            for process in (api_proc, uncached_proc):
                process.terminate()
                process.join(10)
            await nats.stop()
    print(
        f"\nbots: GetBot ratio {ratio:.2f} (>= {GETBOT_TARGET}), ListBots spread {spread:.2f} (<= 1.5), "
        f"watch p99 {p99:.0f} ms (<= 250)"
    )
    return ratio
