"""Dependency faults are retryable: PostgreSQL stopped or frozen under writes gives clients only
UNAVAILABLE / DEADLINE_EXCEEDED (never INTERNAL), the server recovers by itself, and every
write it acknowledged is still there afterwards.

The cluster is this module's own (the session's shared one must never stop).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.accounts import new_account
from tests.fixtures.services import PG_BIN, _pg_run, service_unavailable
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.devtools.embedded.processes import free_port
from the0.server.db.migrate import upgrade_to_head

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
REQUEST_TIMEOUT = 2.0


@dataclass
class OwnCluster:
    data: Path
    log: Path
    port: int
    as_root: bool

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        _pg_run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"],
                self.as_root)

    def stop(self) -> None:
        _pg_run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], self.as_root)

    def processes(self) -> list[int]:
        """The postmaster and every backend: freezing only the postmaster freezes nothing."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False)
        children = [int(p) for p in found.stdout.split()]
        return [postmaster, *children]


@pytest.fixture
def own_cluster() -> Iterator[OwnCluster]:
    if not (PG_BIN / "initdb").exists():
        service_unavailable(f"PostgreSQL 15 binaries not found in {PG_BIN}")
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="the0-pg-faults-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    cluster = OwnCluster(base / "data", base / "pg.log", free_port(), as_root)
    try:
        _pg_run([str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--no-locale"], as_root)  # fmt: skip
        cluster.start()
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        service_unavailable(f"cannot start a throwaway PostgreSQL cluster: {exc}")
    upgrade_to_head(cluster.url)
    try:
        yield cluster
    finally:
        for pid in _alive(cluster):
            os.kill(pid, signal.SIGCONT)
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _alive(cluster: OwnCluster) -> list[int]:
    try:
        return cluster.processes()
    except (FileNotFoundError, ValueError):
        return []


def _reason(error: grpc.aio.AioRpcError) -> tuple[str, bool]:
    status = rpc_status.from_call(error)
    reason, retry = "", False
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        retry = retry or detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    return reason, retry


class Writer:
    """Creates API keys back to back and remembers which ones the server acknowledged."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.acknowledged: list[str] = []
        self.statuses: dict[str, int] = {}
        self.wrong: list[str] = []
        self.slowest = 0.0
        self.last_ok = 0.0

    async def write_once(self) -> None:
        name = f"k{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        try:
            key = api_key_pb2.ApiKey(name=name)
            await self.keys.CreateApiKey(
                api_key_service_pb2.CreateApiKeyRequest(api_key=key), metadata=self.metadata, timeout=8
            )
        except grpc.aio.AioRpcError as error:
            self.statuses[error.code().name] = self.statuses.get(error.code().name, 0) + 1
            reason, retry = _reason(error)
            if error.code() not in RETRYABLE:
                self.wrong.append(f"{error.code().name} {reason}: {error.details()}")
            elif error.code() == grpc.StatusCode.UNAVAILABLE and not retry and reason:
                self.wrong.append(f"UNAVAILABLE without RetryInfo: {reason}")
        else:
            self.statuses["OK"] = self.statuses.get("OK", 0) + 1
            self.acknowledged.append(name)
            self.last_ok = time.monotonic()
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)

    async def run_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.write_once()
            await asyncio.sleep(0.05)

    async def all_acknowledged_exist(self) -> set[str]:
        names: set[str] = set()
        token = ""
        while True:
            page = await self.keys.ListApiKeys(
                api_key_service_pb2.ListApiKeysRequest(page_size=200, page_token=token), metadata=self.metadata
            )
            names |= {k.name for k in page.api_keys}
            token = page.next_page_token
            if not token:
                return set(self.acknowledged) - names


async def _watch_a_bot(channel: grpc.aio.Channel, token: str) -> tuple[grpc.StatusCode, float]:
    bots = bot_service_pb2_grpc.BotServiceStub(channel)
    started = time.monotonic()
    request = bot_service_pb2.WatchBotRequest(id=str(uuid.uuid4()))
    try:
        async for _ in bots.WatchBot(request, metadata=(("authorization", f"Bearer {token}"),), timeout=8):
            break
    except grpc.aio.AioRpcError as error:
        return error.code(), time.monotonic() - started
    return grpc.StatusCode.OK, time.monotonic() - started


async def _recovered(writer: Writer, within: float) -> float:
    """Seconds until a write succeeds again."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        before = writer.statuses.get("OK", 0)
        await writer.write_once()
        if writer.statuses.get("OK", 0) > before:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"no successful write {within} s after PostgreSQL came back: {writer.statuses}")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_stopped_for_ten_seconds_under_writes(stack_factory, own_cluster):
    stack = await stack_factory(database_url=own_cluster.url, request_timeout_seconds=REQUEST_TIMEOUT)
    _, token = await new_account(stack.channel)
    writers = [Writer(stack.channel, token) for _ in range(4)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run_until(stop)) for w in writers]
    try:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own_cluster.stop)
        await asyncio.sleep(10)
        await asyncio.to_thread(own_cluster.start)
        took = await _recovered(writers[0], within=20)
        await asyncio.sleep(1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    statuses: dict[str, int] = {}
    for writer in writers:
        for name, count in writer.statuses.items():
            statuses[name] = statuses.get(name, 0) + count
    print(f"statuses while PostgreSQL was stopped for 10 s: {statuses}; recovered in {took:.1f} s")
    assert [w for writer in writers for w in writer.wrong] == []
    assert statuses.get("UNAVAILABLE", 0) + statuses.get("DEADLINE_EXCEEDED", 0) > 0
    assert all(writer.slowest < REQUEST_TIMEOUT + 6 for writer in writers)
    for writer in writers:
        assert await writer.all_acknowledged_exist() == set()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_frozen_postgres_costs_a_call_its_bound_not_the_clients_patience(stack_factory, own_cluster):
    stack = await stack_factory(database_url=own_cluster.url, request_timeout_seconds=REQUEST_TIMEOUT)
    _, token = await new_account(stack.channel)
    writer = Writer(stack.channel, token)
    await writer.write_once()
    pids = own_cluster.processes()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        calls = [asyncio.create_task(writer.write_once()) for _ in range(3)]
        watch = asyncio.create_task(_watch_a_bot(stack.channel, token))
        await asyncio.gather(*calls)
        watch_status, watch_took = await watch
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert writer.wrong == []
    assert writer.statuses.get("UNAVAILABLE", 0) == 3, writer.statuses
    assert writer.slowest < REQUEST_TIMEOUT + 2, writer.slowest  # the client allowed 8 s
    # A stream's first read is bounded too: the watcher hears UNAVAILABLE, not silence.
    assert watch_status == grpc.StatusCode.UNAVAILABLE and watch_took < REQUEST_TIMEOUT + 2
    await _recovered(writer, within=20)
    assert await writer.all_acknowledged_exist() == set()
