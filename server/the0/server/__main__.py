"""Production entry point: the gRPC server alone, every dependency from the environment.

    the0-server            apply migrations, then serve until SIGTERM/SIGINT
    the0-server migrate    apply migrations and exit
    the0-server rotate-secrets
                           seal every secret config value again under THE0_SECRETS_KEY's
                           current key (exit 1 if some value no key opens)

Envoy runs beside it from envoy/envoy.yaml (see envoy/README.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from the0.server.app import build
from the0.server.bots.secret_rotation import RotationReport, rotate_secrets
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.migrate import upgrade_to_head
from the0.server.secrets.box import config_secrets_for
from the0.server.settings import Settings, SettingsError
from the0.server.structured_logging import configure_logging


async def serve(settings: Settings) -> None:
    await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
    app = await build(settings)
    await app.start()
    await wait_for_stop_signal()
    await app.stop()


async def rotate_stored_secrets(settings: Settings) -> RotationReport:
    engine = create_engine(settings.effective_database_url)
    try:
        return await rotate_secrets(session_factory(engine), config_secrets_for(settings))
    finally:
        await engine.dispose()


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def load_settings(*, dev_mode: bool) -> Settings:
    try:
        return Settings.from_env(os.environ, dev_mode=dev_mode)
    except SettingsError as error:
        print(f"the0: {error}", file=sys.stderr)
        raise SystemExit(2) from None


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
    elif not args:
        asyncio.run(serve(settings))
    else:
        print("usage: the0-server [migrate | rotate-secrets]", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
