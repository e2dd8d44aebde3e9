"""``make run REPLICAS=N``: N server processes behind the one Envoy, on the dev stack's NATS and database.

Each replica is the production entry point (``python -m the0.server``, one worker) on a port of
its own, given everything through the environment as a real deployment would be: the shared
database (a throwaway PostgreSQL unless DATABASE_URL is set), the embedded NATS, the dev
stack's keys, the one object folder (one machine: every replica sees the same files). Envoy
balances REST and gRPC over them round-robin, so a watch opened through Envoy and a change made
through Envoy usually land on different replicas; each replica's own port can be called directly
to make sure of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from the0.devtools.embedded.processes import ChildProcess, free_port
from the0.server.settings import Settings

READY_TIMEOUT = 90.0


def ring(keys: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{kid}:{secret}" for kid, secret in keys)


def replica_env(settings: Settings, *, grpc_port: int, metrics_port: int, database_url: str) -> dict[str, str]:
    """The environment of one replica: the parent's, with every dependency and key of the dev stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THE0_", "JWT_", "DATABASE_", "NATS_"))}
    env |= {
        "DATABASE_URL": database_url,
        "NATS_URL": settings.nats_url or "",
        "THE0_GRPC_HOST": "127.0.0.1",
        "THE0_GRPC_PORT": str(grpc_port),
        "THE0_WORKERS": "1",
        "THE0_METRICS_PORT": str(metrics_port),
        "THE0_DATA_DIR": str(settings.data_dir),
        "THE0_JWT_KEYS": ring(settings.jwt_keys),
        "THE0_API_KEY_HASH_KEYS": ring(settings.api_key_hash_keys),
        "THE0_PAGE_TOKEN_KEYS": ring(settings.page_token_keys),
        "THE0_SECRETS_KEY": ring(settings.secrets_keys),
        "THE0_MAILER_KEY": ring(settings.mailer_keys),
        "THE0_SERVICE_ACCOUNTS": ",".join(":".join(account) for account in settings.service_accounts),
        "FRONTEND_URL": settings.frontend_url,
        "THE0_LOG_LEVEL": settings.log_level,
        "THE0_MAX_UPLOAD_BYTES": str(settings.max_upload_bytes),
    }
    if settings.minio_endpoint:
        env |= {"MINIO_ENDPOINT": settings.minio_endpoint, "MINIO_ACCESS_KEY": settings.minio_access_key or "",
                "MINIO_SECRET_KEY": settings.minio_secret_key or "",
                "MINIO_USE_SSL": "true" if settings.minio_use_ssl else "false"}
    else:
        env["THE0_OBJECT_STORE_DIR"] = str(settings.object_store_dir.resolve())
    if settings.jwt_secret:
        env["JWT_SECRET"] = settings.jwt_secret
    return env


class Replica:
    def __init__(self, index: int, settings: Settings, database_url: str) -> None:
        self.index = index
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.process = ChildProcess(
            [sys.executable, "-m", "the0.server"],
            log_path=settings.data_dir / f"replica-{index}.log",
            name=f"replica-{index}",
            env=replica_env(settings, grpc_port=self.grpc_port, metrics_port=self.metrics_port,
                            database_url=database_url),
        )

    async def wait_until_serving(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type the aio stub as the sync one
            while True:
                self.process.check_alive()
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {self.index} not serving within {timeout:g} s; "
                                       f"log {self.process.log_path}:\n{self.process.log_tail()}")
                await asyncio.sleep(0.1)


async def start_replicas(count: int, settings: Settings, database_url: str) -> list[Replica]:
    replicas = [Replica(index, settings, database_url) for index in range(count)]
    for replica in replicas:
        replica.process.start()
    try:
        await asyncio.gather(*(replica.wait_until_serving() for replica in replicas))
    except BaseException:
        await stop_replicas(replicas)
        raise
    return replicas


async def stop_replicas(replicas: list[Replica]) -> None:
    """SIGTERM to each (a graceful drain), all at once."""
    await asyncio.gather(*(replica.process.astop(timeout=15) for replica in replicas))


def log_paths(replicas: list[Replica]) -> list[Path]:
    return [replica.process.log_path for replica in replicas]
