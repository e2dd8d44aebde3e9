"""Production entry point: the gRPC server alone, every dependency from the environment.

    the0-server            apply migrations, then serve until SIGTERM/SIGINT, in
                           THE0_WORKERS processes sharing the port (workers.py)
    the0-server migrate    apply migrations and exit
    the0-server rotate-secrets
                           seal every secret config value again under THE0_SECRETS_KEY's
                           current key (exit 1 if some value no key opens)

Envoy runs beside it from envoy/envoy.yaml (see envoy/README.md).
"""

from __future__ import annotations

import asyncio
import sys

from the0.server.bots.secret_rotation import RotationReport, rotate_secrets
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.migrate import upgrade_to_head
from the0.server.secrets.box import config_secrets_for
from the0.server.serving import load_settings, serve, serve_with_workers
from the0.server.settings import Settings
from the0.server.structured_logging import configure_logging


async def rotate_stored_secrets(settings: Settings) -> RotationReport:
    engine = create_engine(settings.effective_database_url)
    try:
        return await rotate_secrets(session_factory(engine), config_secrets_for(settings))
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings(dev_mode=False)
    configure_logging(settings.log_level)
    if args == ["migrate"]:
        upgrade_to_head(settings.effective_database_url)
    elif args == ["rotate-secrets"]:
        report = asyncio.run(rotate_stored_secrets(settings))
        print(f"the0: {report.values_resealed} secret value(s) of {report.bots_seen} bot(s) resealed "
              f"under key {settings.secrets_keys[0][0]!r}")
        if report.unreadable:
            print(f"the0: {len(report.unreadable)} bot(s) hold values no key opens: "
                  + ", ".join(report.unreadable[:20]), file=sys.stderr)
            raise SystemExit(1)
    elif not args and settings.workers > 1:
        raise SystemExit(serve_with_workers(settings))
    elif not args:
        asyncio.run(serve(settings))
    else:
        print("usage: the0-server [migrate | rotate-secrets]", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
