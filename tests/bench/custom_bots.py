"""Custom-bot uploads: a 10 MB upload end to end (gRPC, real server process, local object
store, SQLite) vs a raw object-store put of the same bytes in the same run (target <= 2x),
and the server's peak memory growth during 10 concurrent 10 MB uploads (target <= 100 MB)."""

from __future__ import annotations

import asyncio
import io
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import grpc.aio

from tests.bench.harness import BENCH_CALLER_LIMITS, start_in_child
from tests.fixtures.server import TEST_MAILER_KEYS, TEST_SECRETS_KEYS

UPLOAD_MB = 10
ROUNDS = 5
CONCURRENT = 10
CHUNK = 4 * 1024 * 1024 - 1024  # what a gRPC client may send
ENVOY_CHUNK = 1024 * 1024  # what Envoy streams a REST body in


def serve_s3(port_queue: mp.Queue) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_queue.put(server.get_host_and_port()[1])
    threading_event().wait()


def threading_event():  # type: ignore[no-untyped-def]
    import threading

    return threading.Event()


def serve(port_queue: mp.Queue, data_dir: str, nats_url: str, s3_endpoint: str | None = None) -> None:
    async def main() -> None:
        import logging

        from the0.server.app import build
        from the0.server.db.migrate import upgrade_to_head
        from the0.server.settings import Settings
        from the0.server.structured_logging import configure_logging

        configure_logging("DEBUG" if os.environ.get("THE0_BENCH_DEBUG") else "WARNING")
        if not os.environ.get("THE0_BENCH_DEBUG"):
            logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115, ASYNC230  never blocks
        settings = Settings(
            nats_url=nats_url, jwt_secret="bench-secret-of-at-least-thirty-two-bytes!!", secrets_keys=TEST_SECRETS_KEYS, mailer_keys=TEST_MAILER_KEYS,
            grpc_host="127.0.0.1",
            grpc_port=0, data_dir=Path(data_dir), max_upload_bytes=UPLOAD_MB * 1024 * 1024 + 1024 * 1024,
            argon2_memory_kib=1024, argon2_time_cost=1,
            minio_endpoint=s3_endpoint, minio_access_key="testing", minio_secret_key="testing",
            **BENCH_CALLER_LIMITS,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
        app = await build(settings)
        await app.start()
        port_queue.put(app.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def bot_archive(name: str, size_bytes: int) -> bytes:
    from tests.unit.test_archive_checks import bot_files

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path, data in bot_files(name=name).items():
            archive.writestr(path, data)
        archive.writestr("data/prices.bin", os.urandom(size_bytes))
    return buffer.getvalue()


def _memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmHWM", "VmRSS"}:
            values[key] = int(rest.split()[0])
    return values


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


async def run() -> float:
    local = await measure("local")
    await measure("s3")
    return local


async def measure(store: str) -> float:
    from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
    from the0.custom_bot.v1 import custom_bot_service_pb2, custom_bot_service_pb2_grpc
    from the0.devtools.embedded.nats_server import EmbeddedNats
    from the0.server.storage.local import LocalObjectStore

    work = Path(tempfile.mkdtemp(prefix="the0-bench-upload-"))
    nats = EmbeddedNats(work / "nats")
    await nats.start()
    s3_process = process = None
    try:
        if store == "s3":
            from the0.server.storage.minio_store import MinioObjectStore

            s3_process, s3_port = start_in_child(serve_s3)
            endpoint = f"127.0.0.1:{s3_port}"
            raw_store: Any = MinioObjectStore(endpoint, "testing", "testing")
            process, port = start_in_child(serve, str(work / "server"), nats.url, endpoint)
        else:
            raw_store = LocalObjectStore(work / "raw-objects")
            process, port = start_in_child(serve, str(work / "server"), nats.url)
        await raw_store.ensure_bucket("custom-bots")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_send_message_length", 8 * 1024 * 1024)]) as channel:
            tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
                auth_service_pb2.RegisterRequest(email="bench@example.com", password="bench password 1",
                                                 username="bench"))
            auth = [("authorization", f"Bearer {tokens.access_token}")]
            stub = custom_bot_service_pb2_grpc.CustomBotServiceStub(channel)

            async def upload(data: bytes, chunk: int = CHUNK) -> None:
                def requests():  # type: ignore[no-untyped-def]
                    for start in range(0, len(data), chunk):
                        yield custom_bot_service_pb2.UploadCustomBotRequest(
                            chunk={"content_type": "application/zip", "data": data[start : start + chunk]})

                await stub.UploadCustomBot(requests(), metadata=auth)

            size = UPLOAD_MB * 1000 * 1000 - 20_000
            await upload(bot_archive("warm-up", 1024 * 1024))
            uploads, puts = [], []
            for i in range(ROUNDS):  # interleaved: A B A B
                data = bot_archive(f"bench-{i}", size)
                started = time.perf_counter()
                await upload(data)
                uploads.append(time.perf_counter() - started)
                started = time.perf_counter()
                await raw_store.put_bytes("custom-bots", f"raw/{uuid.uuid4()}.zip", data, "application/zip")
                puts.append(time.perf_counter() - started)
            upload_s, put_s = statistics.median(uploads), statistics.median(puts)
            mb = len(data) / 1e6

            archives = [bot_archive(f"concurrent-{i}", size) for i in range(CONCURRENT)]
            before = _memory_kib(process.pid)
            reset = _reset_peak(process.pid)
            started = time.perf_counter()
            await asyncio.gather(*(upload(a, ENVOY_CHUNK) for a in archives))
            concurrent_s = time.perf_counter() - started
            after = _memory_kib(process.pid)
    finally:
        if process is not None:
            process.terminate()
            process.join(5)
        if s3_process is not None:
            s3_process.terminate()
        await nats.stop()
    growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    ratio = upload_s / put_s
    where = "local object store" if store == "local" else "S3 (moto, own process)"
    print(f"\n== custom-bot upload ({mb:.1f} MB zip in {CHUNK / 2**20:.0f} MiB chunks, median of {ROUNDS}, {where}, SQLite)")
    print(f"raw object-store put      {put_s * 1000:8.1f} ms  ({mb / put_s:7.1f} MB/s)")
    print(f"UploadCustomBot over gRPC {upload_s * 1000:8.1f} ms  ({mb / upload_s:7.1f} MB/s)  "
          f"ratio {ratio:.2f} (target <= 2.0)")
    print(f"{CONCURRENT} concurrent uploads in 1 MiB chunks (as from Envoy): {concurrent_s * 1000:8.1f} ms;\n  server RSS before "
          f"{before['VmRSS'] / 1024:.0f} MB, peak {after['VmHWM'] / 1024:.0f} MB: growth {growth_mb:.0f} MB "
          f"(target <= 100 MB{'' if reset else '; peak not reset, includes earlier uploads'})")
    return ratio
