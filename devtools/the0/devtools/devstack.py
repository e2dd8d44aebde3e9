"""`make run`: the whole stack on embedded defaults, in one command.

gRPC server (in this process), an embedded NATS with JetStream, SQLite and a
local object-store folder in the data dir, and Envoy serving REST in front.
Every variable of Settings is honoured: set DATABASE_URL, NATS_URL or
MINIO_* to use an external service instead of the embedded one. Ctrl-C or
SIGTERM stops every child process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from pathlib import Path

from the0.devtools.embedded.envoy import start_envoy
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.devtools.embedded.processes import free_port
from the0.devtools.publish_event import NATS_URL_FILE
from the0.server.app import build
from the0.server.db.migrate import upgrade_to_head
from the0.server.envoy_config import render_envoy_config
from the0.server.keys import parse_key_list
from the0.server.package_data import descriptor_set_path
from the0.server.redaction import redact_url
from the0.server.serving import load_settings, wait_for_stop_signal
from the0.server.settings import Settings, SettingsError
from the0.server.structured_logging import configure_logging


def dev_jwt_secret(data_dir: Path) -> str | None:
    """The single secret of data dirs made before key rings, so their sessions and API keys survive."""
    path = data_dir / "jwt-secret"
    return path.read_text().strip() if path.exists() else None


def dev_key_ring(data_dir: Path, name: str) -> tuple[tuple[str, str], ...]:
    """A ring of one random key (``dev1``), kept in the data dir so dev sessions survive restarts.

    To try a rotation, put ``dev2:<new secret>,`` in front of the file's content.
    """
    path = data_dir / "keys" / name
    if not path.exists():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(f"dev1:{secrets.token_urlsafe(48)}")
        path.chmod(0o600)
    problems: list[str] = []
    ring = parse_key_list(str(path), path.read_text().strip(), problems)
    if problems:
        raise SettingsError(problems)
    return ring


def with_dev_keys(settings: Settings) -> Settings:
    """Keys the environment does not set, generated once and kept in the data dir."""
    if settings.jwt_secret is None:
        settings = dataclasses.replace(settings, jwt_secret=dev_jwt_secret(settings.data_dir))
    data_dir = settings.data_dir
    return dataclasses.replace(
        settings,
        jwt_keys=settings.jwt_keys or dev_key_ring(data_dir, "jwt"),
        api_key_hash_keys=settings.api_key_hash_keys or dev_key_ring(data_dir, "api-key-hash"),
        page_token_keys=settings.page_token_keys or dev_key_ring(data_dir, "page-token"),
        secrets_keys=settings.secrets_keys or dev_key_ring(data_dir, "secrets"),
        # `make fake-runtime` fetches deployments through the platform API with this account's key.
        service_accounts=settings.service_accounts or (("runtime", "dev-runtime", dev_runtime_key(data_dir)),),
    )


RUNTIME_KEY_FILE = "runtime-service-key"


def dev_runtime_key(data_dir: Path) -> str:
    """The dev stack's runtime service-account key, generated once and kept in the data dir."""
    path = data_dir / "keys" / RUNTIME_KEY_FILE
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


async def run(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = with_dev_keys(settings)

    nats = None
    if settings.nats_url is None:
        nats = EmbeddedNats(settings.nats_store_dir)
        await nats.start()
        settings = dataclasses.replace(settings, nats_url=nats.url)

    envoy = None
    app = None
    try:
        await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
        app = await build(settings)
        await app.start()
        admin_port = free_port()
        envoy = await start_envoy(
            render_envoy_config(
                http_port=settings.http_port,
                admin_port=admin_port,
                grpc_host="127.0.0.1",
                grpc_port=app.port,
                frontend_url=settings.frontend_url,
                descriptor_path=str(descriptor_set_path()),
                # Envoy refuses oversized uploads itself (413): the same limit as the server's.
                max_upload_bytes=settings.max_upload_bytes,
            ),
            settings.data_dir / "envoy",
            admin_port,
        )
        # Development tools (publish_event, fake runtime) find the embedded NATS here.
        (settings.data_dir / NATS_URL_FILE).write_text(settings.nats_url or "")
        print_summary(settings, app.port, admin_port, embedded_nats=nats is not None)
        await wait_for_stop_signal()
    finally:
        (settings.data_dir / NATS_URL_FILE).unlink(missing_ok=True)
        if envoy is not None:
            await envoy.astop()
        if app is not None:
            await app.stop()
        if nats is not None:
            await nats.stop()


def print_summary(settings: Settings, grpc_port: int, admin_port: int, *, embedded_nats: bool) -> None:
    database = redact_url(settings.database_url) if settings.database_url else f"SQLite {settings.sqlite_path}"
    objects = (
        f"MinIO {settings.minio_endpoint}" if settings.minio_endpoint else f"local folder {settings.object_store_dir}"
    )
    nats = redact_url(settings.nats_url or "") + (" (embedded, JetStream)" if embedded_nats else "")
    lines = [
        "the0 API dev stack is up:",
        f"  REST (Envoy)   http://localhost:{settings.http_port}   e.g. curl localhost:{settings.http_port}/health",
        f"  gRPC           localhost:{grpc_port}  (also through Envoy on :{settings.http_port})",
        f"  Envoy admin    http://127.0.0.1:{admin_port}",
        f"  database       {database}",
        f"  NATS           {nats}",
        f"  object store   {objects}",
        f"  CORS origin    {settings.frontend_url}",
        f"  data dir       {settings.data_dir.resolve()}",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    settings = load_settings(dev_mode=True)
    configure_logging(settings.log_level)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
