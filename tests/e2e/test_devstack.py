"""`make run` as a person uses it: one command, embedded defaults, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from the0.devtools.embedded.processes import free_port
from the0.server.app import API_SERVICES

READY_LINE = "Ctrl-C stops everything."


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it just has not been reaped yet.
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


async def start_devstack(tmp_path, extra_env: dict[str, str]):
    http_port, grpc_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "NATS_URL", "MINIO_ENDPOINT", "JWT_SECRET"}
    }
    env |= {
        "THE0_DATA_DIR": str(tmp_path / "data"),
        "THE0_HTTP_PORT": str(http_port),
        "THE0_GRPC_PORT": str(grpc_port),
        "THE0_GRPC_HOST": "127.0.0.1",
    } | extra_env
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "the0.devtools.devstack",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    output = []
    try:
        async with asyncio.timeout(60):
            while READY_LINE not in "".join(output):
                line = await process.stdout.readline()
                if not line:
                    pytest.fail(f"dev stack exited early (code {await process.wait()}): {''.join(output)}")
                output.append(line.decode())
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, http_port, grpc_port, tmp_path / "data", "".join(output)


@pytest.fixture
async def devstack(tmp_path):
    started = await start_devstack(tmp_path, {})
    yield started
    if started[0].returncode is None:
        started[0].kill()
        await started[0].wait()


async def test_make_run_serves_rest_and_grpc_and_stops_cleanly(devstack):
    process, http_port, grpc_port, data_dir, banner = devstack
    assert f"http://localhost:{http_port}" in banner and f"localhost:{grpc_port}" in banner

    async with httpx.AsyncClient(timeout=10) as client:
        health = (await client.get(f"http://127.0.0.1:{http_port}/health")).json()
    assert health["status"] == "ok", health
    assert health["checks"] == {"database": "ok", "nats": "ok", "objectStore": "ok"}

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name async for r in replies for s in r.list_services_response.service}
    assert set(API_SERVICES) | {"grpc.health.v1.Health"} <= names

    # Embedded defaults all live in the data dir; the dev keys (one ring per purpose) are private.
    assert (data_dir / "the0.db").is_file()
    assert (data_dir / "nats").is_dir()
    for ring in ("jwt", "api-key-hash", "page-token"):
        assert (data_dir / "keys" / ring).stat().st_mode & 0o077 == 0

    children = children_of(process.pid)
    assert len(children) >= 2, "expected NATS and Envoy as child processes"
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await process.wait() == 0
    await asyncio.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "child processes survived the dev stack"


async def test_make_run_uses_external_services_when_configured(tmp_path, postgres_cluster, nats_server, s3_server):
    await postgres_cluster.acreate_database("devstack_external")
    external = {
        "DATABASE_URL": postgres_cluster.url_for("devstack_external"),
        "NATS_URL": nats_server.url,
        "MINIO_ENDPOINT": s3_server.endpoint,
        "MINIO_ACCESS_KEY": s3_server.access_key,
        "MINIO_SECRET_KEY": s3_server.secret_key,
    }
    process, http_port, _, data_dir, banner = await start_devstack(tmp_path, external)
    try:
        assert nats_server.url in banner and "embedded" not in banner
        assert f"MinIO {s3_server.endpoint}" in banner
        async with httpx.AsyncClient(timeout=10) as client:
            health = (await client.get(f"http://127.0.0.1:{http_port}/health")).json()
        assert health["checks"] == {"database": "ok", "nats": "ok", "objectStore": "ok"}
        assert not (data_dir / "the0.db").exists()  # PostgreSQL, not the SQLite default
        assert len(children_of(process.pid)) == 1, "only Envoy: NATS is external"
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0


def zip_of(path: Path) -> bytes:
    try:
        return path.read_bytes()
    finally:
        path.unlink()


async def test_make_run_person_flow_upload_example_and_see_it_approved(devstack):
    """Issue 4's walk-through: zip the example, upload it with a raw body, approve it with the dev tool."""
    from the0.client.cli.bundle import pack_folder

    process, http_port, _, data_dir, _ = devstack
    assert (data_dir / "nats.url").read_text().startswith("nats://")
    example = Path(__file__).resolve().parents[2] / "examples" / "sma-crossover"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=20) as http:
        registered = await http.post("/api/auth/register", json={
            "email": "person@example.com", "password": "correct horse battery", "username": "person"})
        assert registered.status_code == 200, registered.text
        auth = {"authorization": f"Bearer {registered.json()['accessToken']}"}
        uploaded = await http.post("/api/custom-bots/upload", content=zip_of(pack_folder(example).path),
                                   headers=auth | {"content-type": "application/zip"})
        assert uploaded.status_code == 200, uploaded.text
        custom_bot = uploaded.json()
        assert custom_bot["state"] == "CUSTOM_BOT_STATE_PENDING_REVIEW"

        tool = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "the0.devtools.publish_event", "custom-bot.approved",
            json.dumps({"customBotId": custom_bot["id"], "score": 97, "reviewer": "analyzer"}),
            env=os.environ | {"THE0_DATA_DIR": str(data_dir)}, stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await tool.communicate()
        assert tool.returncode == 0 and b"published custom-bot.approved" in out

        async with asyncio.timeout(10):
            while (await http.get(f"/api/custom-bots/{custom_bot['id']}", headers=auth)).json()["state"] != (
                "CUSTOM_BOT_STATE_APPROVED"
            ):
                await asyncio.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await process.wait() == 0
    assert not (data_dir / "nats.url").exists()
