"""THE0_WORKERS: GetBot throughput of k server processes vs one (target: k workers >= 0.7 * k x one).

The real ``the0-server`` (``python -m the0.server``) on a throwaway PostgreSQL and an embedded NATS,
loaded by h2load (C, HTTP/2, a prebuilt gRPC frame): a Python load generator would take a core
of its own and cap what the server can show. gRPC answers every call with HTTP 200 (the status
is in the trailers), so the server's access log is counted too: every call must be OK. Rounds
alternate 1 worker, k workers, 1, k ... and the median of each is kept.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import grpc

from tests.bench.bots import register, seed, throwaway_postgres
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.devtools.embedded.processes import free_port
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc

SCALING_TARGET = 0.7
_REQS = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")


def _env(database_url: str, nats_url: str, port: int, workers: int, data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_"))}
    return env | {
        "DATABASE_URL": database_url, "NATS_URL": nats_url, "THE0_GRPC_HOST": "127.0.0.1",
        "THE0_GRPC_PORT": str(port), "THE0_WORKERS": str(workers),
        "THE0_JWT_KEYS": "k1:" + "j" * 64, "THE0_API_KEY_HASH_KEYS": "h1:" + "h" * 64,
        "THE0_PAGE_TOKEN_KEYS": "p1:" + "p" * 64, "THE0_SECRETS_KEY": "s1:" + "s" * 64,
        "THE0_MAILER_KEY": "m1:" + "m" * 64,
        "THE0_DATA_DIR": data_dir, "THE0_RATE_LIMIT_PER_SECOND": "1000000", "THE0_RATE_LIMIT_BURST": "1000000",
    }


async def _serving(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_service_pb2_grpc.HealthServiceStub(channel)
        async with asyncio.timeout(90):
            while True:
                try:
                    await health.GetHealth(health_service_pb2.GetHealthRequest(), timeout=1)
                    return
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)


def _h2load(port: int, frame: Path, token: str, *, seconds: int, clients: int, streams: int) -> float:
    out = subprocess.run(
        [
            "h2load", "-D", str(int(seconds)), "--warm-up-time", "1", "-c", str(clients), "-m", str(streams),
            "-d", str(frame), "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"authorization: Bearer {token}",
            f"http://127.0.0.1:{port}/the0.bot.v1.BotService/GetBot",
        ],
        capture_output=True, text=True, check=True,
    ).stdout
    match = _REQS.search(out)
    if match is None:
        raise RuntimeError(f"h2load printed no rate:\n{out}")
    return float(match.group(1))


async def run(*, seconds: int = 8, rounds: int = 3, clients: int = 16, streams: int = 4) -> float:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install nghttp2-client (make system-deps does)")
    from the0.devtools.embedded.nats_server import EmbeddedNats
    from the0.server.db.migrate import upgrade_to_head

    k = os.cpu_count() or 1
    with throwaway_postgres() as database_url, tempfile.TemporaryDirectory() as data_dir:
        await asyncio.to_thread(upgrade_to_head, database_url)
        nats = EmbeddedNats(Path(data_dir) / "nats")
        await nats.start()
        rates: dict[int, list[float]] = {1: [], k: []}
        errors: list[str] = []
        try:
            token, frame = "", Path(data_dir) / "get-bot.frame"
            for _ in range(rounds):
                for workers in (1, k):
                    port = free_port()
                    log_path = Path(data_dir) / f"server-{workers}-{uuid.uuid4().hex[:6]}.log"
                    with log_path.open("wb") as log_file:
                        server = subprocess.Popen(  # noqa: ASYNC220 - started once per round, waited in SIGTERM
                            [sys.executable, "-m", "the0.server"],
                            env=_env(database_url, nats.url, port, workers, data_dir),
                            stdout=log_file, stderr=log_file,
                        )
                        try:
                            await _serving(port)
                            if not token:  # one user and one bot, made once through the first server
                                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                                    caller = await register(channel)
                                    await seed(database_url, caller.user_id, 1)
                                    stub = bot_service_pb2_grpc.BotServiceStub(channel)
                                    [bot] = (await stub.ListBots(bot_service_pb2.ListBotsRequest(page_size=1),
                                                                 metadata=caller.metadata)).bots
                                token = caller.metadata[0][1].removeprefix("Bearer ")
                                body = bot_service_pb2.GetBotRequest(id=bot.id).SerializeToString()
                                frame.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
                            rates[workers].append(await asyncio.to_thread(
                                _h2load, port, frame, token, seconds=seconds, clients=clients, streams=streams))
                        finally:
                            server.send_signal(signal.SIGTERM)
                            server.wait(60)
                    text = log_path.read_text(errors="replace")
                    calls = text.count('"method":"/the0.bot.v1.BotService/GetBot"')
                    # h2load cuts the streams still in flight when its time is up: those are CANCELLED.
                    not_ok = calls - sum(
                        text.count(f'"method":"/the0.bot.v1.BotService/GetBot","code":"{code}"')
                        for code in ("OK", "CANCELLED")
                    )
                    if calls == 0 or not_ok:
                        errors.append(f"{workers} worker(s): {not_ok} of {calls} GetBot calls not OK")
        finally:
            await nats.stop()
    one, many = statistics.median(rates[1]), statistics.median(rates[k])
    ratio = many / one
    target = SCALING_TARGET * k
    print(f"\n== GetBot through h2load (c={clients}, {streams} streams each, {seconds:.0f} s rounds), "
          f"{k} cores")
    print(f"1 worker: {one:.0f} calls/s (rounds {', '.join(f'{r:.0f}' for r in rates[1])})")
    print(f"{k} workers: {many:.0f} calls/s (rounds {', '.join(f'{r:.0f}' for r in rates[k])})")
    print(f"{k} workers / 1 worker: {ratio:.2f}  target: >= {target:.2f} (0.7 x {k}) "
          f"{'✓' if ratio >= target else '✗'}")
    if errors:
        print("NOT VALID: " + "; ".join(errors))
    return ratio
