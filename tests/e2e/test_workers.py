"""THE0_WORKERS=2: the real ``the0-server`` as two processes sharing one port (workers.py).

Sixteen connections are spread by the kernel over both workers (all on one: 2 in 65,536); a change
made through one worker is seen through every connection within the fan-out delay, although each
worker caches GetBot; a second server on the same port is refused; SIGTERM stops every worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import field_mask_pb2

from tests.e2e.test_bots import create, register
from tests.e2e.test_no_secrets_in_logs import wait_until_serving
from tests.integration.test_bots_support import add_custom_bot
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.devtools.embedded.processes import free_port
from the0.server.db.engine import create_engine, session_factory

CONNECTIONS = 16
FANOUT_BOUND_SECONDS = 2.0


def server_env(database_url: str, nats_url: str, port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_"))}
    return env | {
        "DATABASE_URL": database_url, "NATS_URL": nats_url, "THE0_GRPC_HOST": "127.0.0.1",
        "THE0_GRPC_PORT": str(port), "THE0_WORKERS": "2", "THE0_READ_CACHE": "60s",
        "THE0_JWT_KEYS": "k1:" + uuid.uuid4().hex * 2, "THE0_API_KEY_HASH_KEYS": "h1:" + uuid.uuid4().hex * 2,
        "THE0_PAGE_TOKEN_KEYS": "p1:" + uuid.uuid4().hex * 2, "THE0_SECRETS_KEY": "s1:" + uuid.uuid4().hex * 2,
        "THE0_MAILER_KEY": "m1:" + uuid.uuid4().hex * 2,
        "THE0_DATA_DIR": str(data_dir), "THE0_OBJECT_STORE_DIR": str(data_dir / "objects"),
    }


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (one per worker: SO_REUSEPORT gives each its own).

    gRPC may bind 127.0.0.1 as the IPv4-mapped IPv6 address, so both tables are read.
    """
    wanted = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1] in wanted and fields[3] == "0A"  # 0A: LISTEN
    return count


async def both_workers_listen(port: int, process: asyncio.subprocess.Process) -> None:
    """Connections made before the second worker binds all go to the first."""
    async with asyncio.timeout(90):
        while listening_sockets(port) < 2:
            if process.returncode is not None:
                pytest.fail(f"the0-server exited with {process.returncode}")
            await asyncio.sleep(0.1)


def pids_of_access_lines(output: bytes, method: str) -> set[int]:
    pids = set()
    for line in output.splitlines():
        if line.startswith(b"{") and method.encode() in line:
            pids.add(orjson.loads(line)["pid"])
    return pids


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_workers_share_the_port_and_stay_consistent(
    database_url: str, isolated_nats: EmbeddedNats, tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(database_url, isolated_nats.url, port, tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "the0.server", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    engine = create_engine(database_url)
    try:
        await both_workers_listen(port, process)
        for channel in channels:
            await wait_until_serving(channel, process, within=90)
        user = await register(channels[0])
        await add_custom_bot(session_factory(engine), user.id)
        bot = await create(user, name="before")
        everywhere = [user.on(channel) for channel in channels]
        for each in everywhere:  # fills each worker's cache
            for _ in range(2):
                got = await each.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=each.metadata)
                assert got.name == "before"
        await user.bots.UpdateBot(
            bot_service_pb2.UpdateBotRequest(
                bot=bot_pb2.Bot(id=bot.id, name="after"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=user.metadata,
        )
        async with asyncio.timeout(FANOUT_BOUND_SECONDS):
            for each in everywhere:
                request = bot_service_pb2.GetBotRequest(id=bot.id)
                while (await each.bots.GetBot(request, metadata=each.metadata)).name != "after":
                    await asyncio.sleep(0.005)

        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "the0.server", env=env | {"THE0_DATA_DIR": str(tmp_path / "second")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, refused = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2, refused.decode(errors="replace")[-2000:]
        assert f"127.0.0.1:{port} is already in use" in refused.decode()
    finally:
        for channel in channels:
            await channel.close()
        await engine.dispose()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    output = stdout + stderr
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    worker_pids = pids_of_access_lines(output, "/the0.bot.v1.BotService/GetBot")
    assert len(worker_pids) == 2, f"GetBot served by {worker_pids}"
    for pid in worker_pids:  # every worker stopped with its supervisor
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"worker {pid} outlived the supervisor"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_settings_refuse_workers_without_a_fixed_port() -> None:
    from the0.server.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="THE0_WORKERS > 1 needs a fixed THE0_GRPC_PORT"):
        Settings.from_env({"THE0_WORKERS": "2", "THE0_GRPC_PORT": "0"}, dev_mode=True)


def test_workers_default_to_the_cores_on_postgresql_and_one_on_sqlite(tmp_path: Any) -> None:
    from the0.server.settings import Settings

    postgres = Settings.from_env({"DATABASE_URL": "postgresql://u@h/db", "NATS_URL": "nats://h"}, dev_mode=True)
    sqlite = Settings.from_env({"NATS_URL": "nats://h"}, dev_mode=True)
    assert (postgres.workers, sqlite.workers) == (os.cpu_count() or 1, 1)
