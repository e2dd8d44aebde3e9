"""The embedded NATS server, the connection helpers and the event stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType

from the0.devtools.embedded.nats_server import EmbeddedNats, find_nats_server_binary
from the0.devtools.embedded.processes import ChildProcess, free_port, wait_for_tcp
from the0.server.events.nats_connection import (
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    NatsUnavailable,
    connect_nats,
    ensure_stream,
    ping_nats,
)


def test_binary_comes_from_the_wheel() -> None:
    binary = find_nats_server_binary()
    assert binary.name == "nats-server" and not str(binary).startswith("/usr/")


async def test_embedded_server_accepts_clients(nats_server: EmbeddedNats, nats_client: NatsClient) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_client.is_connected
    await ping_nats(nats_client)


async def test_connect_fails_fast_when_nothing_listens() -> None:
    with pytest.raises(NatsUnavailable, match="cannot connect to NATS"):
        await connect_nats(f"nats://127.0.0.1:{free_port()}", timeout=1.5)


async def test_ping_fails_on_a_closed_connection(nats_server: EmbeddedNats) -> None:
    nc = await connect_nats(nats_server.url)
    await nc.close()
    with pytest.raises(NatsUnavailable):
        await ping_nats(nc)


async def test_ensure_stream_creates_the_events_stream_and_is_idempotent(isolated_nats: EmbeddedNats) -> None:
    nc = await connect_nats(isolated_nats.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_stream(js)
        info = await js.stream_info(EVENTS_STREAM)
        assert info.config.subjects == list(EVENTS_SUBJECTS)
        assert info.config.storage == StorageType.FILE
        assert info.config.max_age == 7 * 24 * 3600
        ack = await js.publish("the0.bot.created", b"{}")
        assert ack.stream == EVENTS_STREAM
    finally:
        await nc.close()


async def test_ensure_stream_updates_without_losing_messages(isolated_nats: EmbeddedNats) -> None:
    nc = await connect_nats(isolated_nats.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, "UPDATED", ["old.>"])
        await js.publish("old.x", b"kept")
        await ensure_stream(js, "UPDATED", ["old.>", "new.>"])
        info = await js.stream_info("UPDATED")
        assert sorted(info.config.subjects or []) == ["new.>", "old.>"]
        assert info.state.messages == 1
    finally:
        await nc.close()


async def test_duplicate_msg_id_is_dropped(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    name = f"DEDUP_{uuid.uuid4().hex[:8]}"
    await ensure_stream(js, name, [f"{name.lower()}.>"])
    headers = {"Nats-Msg-Id": str(uuid.uuid4())}
    first = await js.publish(f"{name.lower()}.x", b"one", headers=headers)
    second = await js.publish(f"{name.lower()}.x", b"one", headers=headers)
    assert first.duplicate is not True
    assert second.duplicate is True
    assert second.seq == first.seq
    assert (await js.stream_info(name)).state.messages == 1


async def test_restart_keeps_stream_messages(nats_server: EmbeddedNats) -> None:
    name = f"RESTART_{uuid.uuid4().hex[:8]}"
    subject = f"{name.lower()}.event"
    nc = await connect_nats(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, name, [f"{name.lower()}.>"])
        for i in range(3):
            await js.publish(subject, f"event-{i}".encode())
        await nats_server.stop()
        assert not nats_server.running
    finally:
        await nc.close()
        if not nats_server.running:
            await nats_server.restart()

    nc = await connect_nats(nats_server.url)
    try:
        js = nc.jetstream()
        consumer = await js.pull_subscribe(subject, durable="reader", stream=name)
        messages = await consumer.fetch(3, timeout=5)
        assert [m.data for m in messages] == [b"event-0", b"event-1", b"event-2"]
        for message in messages:
            await message.ack()
    finally:
        await nc.close()


async def test_client_reconnects_after_a_restart(isolated_nats: EmbeddedNats) -> None:
    nc = await connect_nats(isolated_nats.url)
    try:
        await isolated_nats.restart()
        async with asyncio.timeout(10):  # reconnecting is asynchronous: poll for it
            while not nc.is_connected:
                await asyncio.sleep(0.05)
        await ping_nats(nc)
        assert nc.stats["reconnects"] >= 1
    finally:
        await nc.close()


# -- the generic child-process helpers (also used by the Envoy launcher) -----------------------

_STUBBORN = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
time.sleep(60)
"""


async def test_child_process_is_killed_when_it_ignores_sigterm(tmp_path: Path) -> None:
    port = free_port()
    child = ChildProcess([sys.executable, "-c", _STUBBORN, str(port)], log_path=tmp_path / "logs" / "child.log")
    child.start()
    try:
        await wait_for_tcp("127.0.0.1", port, 10, process=child)  # SIGTERM is ignored from here on
        assert child.running
        assert await child.astop(timeout=0.3) == -9
        assert not child.running
        assert "ignoring SIGTERM" in child.log_tail()
    finally:
        child.stop(timeout=0)


_PARENT = """
import sys, time
from pathlib import Path
from the0.devtools.embedded.processes import ChildProcess
child = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"], log_path=Path(sys.argv[1]))
child.start()
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan is reaped by whatever PID 1 is, maybe never)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _is_the_binary(pid: int) -> bool:
    """The child has exec'd past setpriv into its own program."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return b"--pdeathsig" not in argv and any(b"time.sleep(60)" in part for part in argv)


def test_a_child_dies_with_its_parent_even_by_sigkill(tmp_path: Path) -> None:
    """No nats-server or Envoy may outlive a killed test run or dev stack."""
    with subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path / "child.log")], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        # setpriv sets the death signal, then execs the binary: a parent killed before that was
        # done has no signal to send (CI's loaded machine once got there first). So kill it only
        # once the child is the binary itself, as a dev stack or test run does long after start.
        deadline = time.monotonic() + 10
        while not _is_the_binary(child_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _alive(child_pid) and _is_the_binary(child_pid)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(child_pid):
                return
            time.sleep(0.05)
        raise AssertionError(f"child {child_pid} outlived its SIGKILLed parent")


async def test_wait_for_tcp_reports_a_child_that_died(tmp_path: Path) -> None:
    child = ChildProcess(
        [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"], log_path=tmp_path / "c.log"
    )
    child.start()
    try:
        with pytest.raises(RuntimeError, match=r"(?s)exited with status 3.*bad config"):
            await wait_for_tcp("127.0.0.1", free_port(), 10, process=child)
    finally:
        child.stop()


async def test_wait_for_tcp_times_out() -> None:
    with pytest.raises(TimeoutError):
        await wait_for_tcp("127.0.0.1", free_port(), timeout=0.2)
