"""`make run REPLICAS=3`: three server processes behind the one Envoy, on one NATS and one PostgreSQL.

A watch held on one replica sees a change made through another, and REST through Envoy is served
by them. Each replica's own gRPC port is called directly, so which replica does what is certain.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import httpx
from google.protobuf import field_mask_pb2

from tests.e2e.test_bots import create, next_bot, register
from tests.integration.test_bots_support import add_custom_bot
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.devtools.embedded.processes import free_port
from the0.server.db.engine import create_engine, session_factory

READY_LINE = "Ctrl-C stops everything."


async def test_a_watch_on_one_replica_sees_a_change_made_through_another(tmp_path: Path) -> None:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_", "MINIO_"))}
    env |= {"THE0_DATA_DIR": str(tmp_path / "data"), "THE0_HTTP_PORT": str(http_port), "THE0_GRPC_HOST": "127.0.0.1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "the0.devtools.devstack", "--replicas", "3",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    banner = ""
    channels: list[grpc.aio.Channel] = []
    try:
        async with asyncio.timeout(150):
            while READY_LINE not in banner:
                line = await process.stdout.readline()
                assert line, f"the dev stack exited before it was ready:\n{banner}"
                banner += line.decode()
        ports = [int(p) for p in re.findall(r"replica \d+ +gRPC 127\.0\.0\.1:(\d+)", banner)]
        assert len(ports) == 3, banner
        # More than one replica: PostgreSQL, not SQLite (the banner hides the user: read the port).
        database = re.search(r"database +postgresql\S+@127\.0\.0\.1:(\d+)/postgres", banner)
        assert database is not None, banner
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        first = await register(channels[0])
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{database.group(1)}/postgres")
        try:
            await add_custom_bot(session_factory(engine), first.id)
        finally:
            await engine.dispose()
        bot = await create(first.on(channels[1]), name="before")
        watch = first.on(channels[2]).bots.WatchBot(bot_service_pb2.WatchBotRequest(id=bot.id),
                                                     metadata=first.metadata)
        assert (await next_bot(watch)).bot.name == "before"
        await first.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(bot=bot_pb2.Bot(id=bot.id, name="after"),
                                             update_mask=field_mask_pb2.FieldMask(paths=["name"])),
            metadata=first.metadata,
        )
        assert (await next_bot(watch, timeout=5)).bot.name == "after"
        watch.cancel()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as rest:
            got = await rest.get(f"/api/bots/{bot.id}", headers={"authorization": f"Bearer {first.token}"})
            assert got.status_code == 200 and got.json()["name"] == "after"
    finally:
        for channel in channels:
            await channel.close()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0
