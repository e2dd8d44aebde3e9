"""Production entry point: the gRPC server alone, every dependency from the environment.

    the0-server            apply migrations, then serve until SIGTERM/SIGINT, in
                           THE0_WORKERS processes sharing the port (workers.py)
    the0-server migrate    apply migrations and exit (needs only DATABASE_URL; one migrator
                           at a time on PostgreSQL: an advisory lock)
    the0-server rotate-secrets
                           seal every secret config value and every two-factor TOTP secret
                           again under THE0_SECRETS_KEY's current key (exit 1 if some value
                           no key opens); safe to rerun; reads only DATABASE_URL and
                           THE0_SECRETS_KEY

    the0-server envoy-config DIR --grpc-host H --frontend-url U
                           write Envoy's configuration for replicas at H, and the descriptor set

Envoy runs beside it from envoy/envoy.yaml (see envoy/README.md, docs/deploy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path

from the0.server.bots.secret_rotation import RotationReport, rotate_secrets
from the0.server.db.engine import create_engine, session_factory
from the0.server.envoy_config import DOCS_FILES, render_envoy_config
from the0.server.identity.totp_rotation import TotpRotationReport, rotate_totp_secrets
from the0.server.keys import key_ring
from the0.server.package_data import descriptor_set_path, docs_dir, openapi_dir
from the0.server.secrets.box import ConfigSecrets
from the0.server.serving import load_settings, migrate_only, run_until_stopped
from the0.server.settings import SettingsError, database_url_from_env, secrets_keys_from_env
from the0.server.startup_errors import fail
from the0.server.structured_logging import configure_logging


async def rotate_stored_secrets(
    database_url: str, secrets_keys: tuple[tuple[str, str], ...]
) -> tuple[RotationReport, TotpRotationReport]:
    engine = create_engine(database_url)
    try:
        sessions, box = session_factory(engine), ConfigSecrets(key_ring(secrets_keys, None))
        return await rotate_secrets(sessions, box), await rotate_totp_secrets(sessions, box)
    finally:
        await engine.dispose()


def rotate(environ: dict[str, str] | os._Environ[str]) -> None:
    """``the0-server rotate-secrets``: like migrate, it reads only what it uses."""
    try:
        database_url, keys = database_url_from_env(environ), secrets_keys_from_env(environ)
    except SettingsError as error:
        raise fail(str(error)) from None
    report, totp_report = asyncio.run(rotate_stored_secrets(database_url, keys))
    kid = keys[0][0]
    print(f"the0: {report.values_resealed} secret value(s) of {report.bots_seen} bot(s) resealed under key {kid!r}")
    print(f"the0: {totp_report.secrets_resealed} TOTP secret(s) of {totp_report.users_seen} user(s) "
          f"resealed under key {kid!r}")
    if report.unreadable:
        print(f"the0: {len(report.unreadable)} bot(s) hold values no key opens: "
              + ", ".join(report.unreadable[:20]), file=sys.stderr)
    if totp_report.unreadable:
        print(f"the0: {len(totp_report.unreadable)} user(s) hold a TOTP secret no key opens "
              "(they must enrol again): " + ", ".join(totp_report.unreadable[:20]), file=sys.stderr)
    if report.unreadable or totp_report.unreadable:
        raise SystemExit(1)


def write_envoy_config(args: argparse.Namespace) -> None:
    """The edge of this very version: its routes and descriptor set cannot drift from the server's."""
    args.directory.mkdir(parents=True, exist_ok=True)
    descriptor = args.directory / "the0.binpb"
    shutil.copyfile(descriptor_set_path(), descriptor)
    # What Envoy serves from files (/api/openapi.json|yaml, /api/docs): copied beside its config.
    openapi, docs = args.directory / "openapi", args.directory / "docs"
    shutil.copytree(openapi_dir(), openapi, dirs_exist_ok=True)
    for _, name, _ in DOCS_FILES:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(docs_dir() / name, docs / name)
    (args.directory / "envoy.yaml").write_text(render_envoy_config(
        http_port=args.http_port, admin_port=args.admin_port, grpc_host=args.grpc_host, grpc_port=args.grpc_port,
        frontend_url=args.frontend_url, descriptor_path=str(descriptor), openapi_dir=str(openapi),
        docs_dir=str(docs),
    ))
    print(f"the0: wrote {args.directory / 'envoy.yaml'} and {descriptor}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="the0-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="[migrate | rotate-secrets | envoy-config]")
    commands.add_parser("migrate", help="apply the database migrations and exit (reads DATABASE_URL only)")
    commands.add_parser("rotate-secrets", help="reseal every secret bot-config value and TOTP secret under "
                        "THE0_SECRETS_KEY's current key (reads DATABASE_URL and THE0_SECRETS_KEY only)")
    edge = commands.add_parser("envoy-config", help="write envoy.yaml and the descriptor set it reads into a "
                               "directory (deploy/: Envoy's init container); reads no settings")
    edge.add_argument("directory", type=Path)
    edge.add_argument("--grpc-host", required=True, help="DNS name of the server replicas (every address is a host)")
    edge.add_argument("--grpc-port", type=int, default=50051)
    edge.add_argument("--http-port", type=int, default=8080)
    edge.add_argument("--admin-port", type=int, default=9901)
    edge.add_argument("--frontend-url", required=True, help="the one browser origin CORS allows (FRONTEND_URL)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "envoy-config":
        write_envoy_config(args)
        return
    if args.command == "migrate":
        configure_logging("INFO")
        migrate_only()
        return
    if args.command == "rotate-secrets":
        configure_logging("INFO")
        rotate(os.environ)
        return
    settings = load_settings(dev_mode=False)
    configure_logging(settings.log_level)
    run_until_stopped(settings)


if __name__ == "__main__":
    main()
