"""Backtest results: GetBacktestResults of a 5 MB analysis.json over gRPC (real server process,
SQLite) vs a raw object-store get of the same object in the same run (target <= 1.5x), with the
local object store and with S3 (moto in its own process).

The first download of the object parses it (once per version of the object, kept on the backtest
row) and is timed apart; the compared downloads stream it from the store. A bare grpc.aio server
streaming the same bytes in the same HttpBody chunks (no interceptors, database or store) shows
what the transfer itself costs: on loopback it is most of a download."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc.aio
import orjson

from tests.bench.custom_bots import serve, serve_s3
from tests.bench.harness import start_in_child

ANALYSIS_MB = 5
ROUNDS = 15


def analysis_json(size: int) -> bytes:
    """About ``size`` bytes of analysis: metrics and one long equity plot (~10 bytes a point)."""
    rng = random.Random(7)
    points = [round(rng.uniform(9000, 11000), 4) for _ in range(size // 10)]
    body = {"metrics": {"totalReturn": 0.1, "sharpeRatio": 1.2}, "plots": [{"name": "equity", "y": points}],
            "tables": []}
    return orjson.dumps(body)


def serve_bare_stream(port_queue: mp.Queue, size: int, chunk_size: int) -> None:
    async def main() -> None:
        from google.api import httpbody_pb2

        data = analysis_json(size)

        async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[httpbody_pb2.HttpBody]:
            view = memoryview(data)
            for start in range(0, len(view), chunk_size):
                yield httpbody_pb2.HttpBody(content_type="application/json", data=bytes(view[start : start + chunk_size]))

        server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            stream, response_serializer=httpbody_pb2.HttpBody.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bare", {"Stream": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_queue.put(port)
        await server.wait_for_termination()

    asyncio.run(main())


async def bare_stream_of(port: int) -> Any:
    """A download from serve_bare_stream, as the benchmark's client makes it."""
    from google.api import httpbody_pb2

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    call = channel.unary_stream("/bench.Bare/Stream", request_serializer=lambda b: b,
                                response_deserializer=httpbody_pb2.HttpBody.FromString)

    async def download() -> bytes:
        return b"".join([c.data async for c in call(b"")])

    return channel, download


async def run() -> float:
    local = await measure("local")
    await measure("s3")
    return local


async def measure(store: str) -> float:
    from sqlalchemy import update

    from tests.integration.test_backtests_support import add_backtestable_bot, backtest_config
    from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
    from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
    from the0.devtools.embedded.nats_server import EmbeddedNats
    from the0.server.backtests.models import BacktestRow
    from the0.server.db.engine import create_engine, session_factory
    from the0.server.storage.local import LocalObjectStore
    from the0.server.storage.object_store import DEFAULT_CHUNK_SIZE

    work = Path(tempfile.mkdtemp(prefix="the0-bench-backtests-"))
    nats = EmbeddedNats(work / "nats")
    await nats.start()
    s3_process = process = bare_process = None
    try:
        if store == "s3":
            from the0.server.storage.minio_store import MinioObjectStore

            s3_process, s3_port = start_in_child(serve_s3)
            endpoint = f"127.0.0.1:{s3_port}"
            raw_store: Any = MinioObjectStore(endpoint, "testing", "testing")
            process, port = start_in_child(serve, str(work / "server"), nats.url, endpoint)
        else:
            raw_store = LocalObjectStore(work / "server" / "objects")
            process, port = start_in_child(serve, str(work / "server"), nats.url)
        bare_process, bare_port = start_in_child(serve_bare_stream, ANALYSIS_MB * 1000 * 1000, DEFAULT_CHUNK_SIZE)
        bare_channel, bare_download = await bare_stream_of(bare_port)
        engine = create_engine(f"sqlite:///{work / 'server' / 'the0.db'}")
        sessions = session_factory(engine)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_receive_message_length", 8 * 1024 * 1024)]) as channel:
            tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
                auth_service_pb2.RegisterRequest(email="bench@example.com", password="bench password 1",
                                                 username="bench"))
            auth = [("authorization", f"Bearer {tokens.access_token}")]
            await add_backtestable_bot(sessions, tokens.user.id)
            stub = backtest_service_pb2_grpc.BacktestServiceStub(channel)
            config = backtest_config()
            backtest = await stub.CreateBacktest(backtest_service_pb2.CreateBacktestRequest(
                backtest=backtest_pb2.Backtest(name="bench", config=config)), metadata=auth)
            async with sessions() as session, session.begin():
                await session.execute(
                    update(BacktestRow).where(BacktestRow.id == backtest.id).values(state="COMPLETED", etag="done")
                )
            await engine.dispose()
            data = analysis_json(ANALYSIS_MB * 1000 * 1000)
            key = f"{backtest.id}/analysis.json"
            await raw_store.ensure_bucket("backtests")
            await raw_store.put_bytes("backtests", key, data, "application/json")

            async def download() -> bytes:
                request = backtest_service_pb2.GetBacktestResultsRequest(id=backtest.id)
                return b"".join([c.data async for c in stub.GetBacktestResults(request, metadata=auth)])

            started = time.perf_counter()
            assert await download() == data  # the one that checks it is JSON, and a warm-up
            first_s = time.perf_counter() - started
            await raw_store.get_bytes("backtests", key, len(data) + 1)
            assert await bare_download() == data
            downloads, gets, bares = [], [], []
            for _ in range(ROUNDS):  # interleaved: A B C A B C
                started = time.perf_counter()
                await download()
                downloads.append(time.perf_counter() - started)
                started = time.perf_counter()
                await raw_store.get_bytes("backtests", key, len(data) + 1)
                gets.append(time.perf_counter() - started)
                started = time.perf_counter()
                await bare_download()
                bares.append(time.perf_counter() - started)
            await bare_channel.close()
    finally:
        if bare_process is not None:
            bare_process.terminate()
        if process is not None:
            process.terminate()
            process.join(5)
        if s3_process is not None:
            s3_process.terminate()
        await nats.stop()
    download_s, get_s, bare_s = statistics.median(downloads), statistics.median(gets), statistics.median(bares)
    mb = len(data) / 1e6
    ratio = download_s / get_s
    where = "local object store" if store == "local" else "S3 (moto, own process)"
    print(f"\n== backtest results ({mb:.1f} MB analysis.json, median of {ROUNDS}, {where}, SQLite)")
    print(f"raw object-store get          {get_s * 1000:8.1f} ms  ({mb / get_s:7.1f} MB/s)")
    print(f"first download (parses it)    {first_s * 1000:8.1f} ms  (once per version of the object)")
    print(f"GetBacktestResults over gRPC  {download_s * 1000:8.1f} ms  ({mb / download_s:7.1f} MB/s)  "
          f"ratio {ratio:.2f} (target <= 1.5)")
    print(f"bare grpc.aio stream, same    {bare_s * 1000:8.1f} ms  ({mb / bare_s:7.1f} MB/s)  "
          f"GetBacktestResults / bare {download_s / bare_s:.2f}")
    return ratio


if __name__ == "__main__":
    asyncio.run(run())
