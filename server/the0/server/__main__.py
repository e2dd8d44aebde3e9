"""Production entry point: the gRPC server alone, every dependency from the environment.

    the0-server            apply migrations, then serve until SIGTERM/SIGINT, in
                           THE0_WORKERS processes sharing the port (workers.py)
    the0-server migrate    apply migrations and exit (needs only DATABASE_URL; one migrator
                           at a time on PostgreSQL: an advisory lock)
    the0-server rotate-secrets
                           seal every secret config value again under THE0_SECRETS_KEY's
                           current key (exit 1 if some value no key opens)

Envoy runs beside it from envoy/envoy.yaml (see envoy/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from the0.server.bots.secret_rotation import RotationReport, rotate_secrets
from the0.server.db.engine import create_engine, session_factory
from the0.server.secrets.box import config_secrets_for
from the0.server.serving import load_settings, migrate_only, run_until_stopped
from the0.server.settings import Settings
from the0.server.structured_logging import configure_logging


async def rotate_stored_secrets(settings: Settings) -> RotationReport:
    engine = create_engine(settings.effective_database_url)
    try:
        return await rotate_secrets(session_factory(engine), config_secrets_for(settings))
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="the0-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="[migrate | rotate-secrets]")
    commands.add_parser("migrate", help="apply the database migrations and exit (reads DATABASE_URL only)")
    commands.add_parser("rotate-secrets", help="reseal every secret bot-config value under THE0_SECRETS_KEY's current key")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "migrate":
        configure_logging("INFO")
        migrate_only()
        return
    settings = load_settings(dev_mode=False)
    configure_logging(settings.log_level)
    if args.command == "rotate-secrets":
        report = asyncio.run(rotate_stored_secrets(settings))
        print(f"the0: {report.values_resealed} secret value(s) of {report.bots_seen} bot(s) resealed "
              f"under key {settings.secrets_keys[0][0]!r}")
        if report.unreadable:
            print(f"the0: {len(report.unreadable)} bot(s) hold values no key opens: "
                  + ", ".join(report.unreadable[:20]), file=sys.stderr)
            raise SystemExit(1)
    else:
        run_until_stopped(settings)


if __name__ == "__main__":
    main()
