"""Production entry point: the gRPC server alone, every dependency from the environment.

    the0-server            apply migrations, then serve until SIGTERM/SIGINT
    the0-server migrate    apply migrations and exit

Envoy runs beside it from envoy/envoy.yaml (see envoy/README.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from the0.server.app import build
from the0.server.db.migrate import upgrade_to_head
from the0.server.settings import Settings, SettingsError
from the0.server.structured_logging import configure_logging


async def serve(settings: Settings) -> None:
    await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
    app = await build(settings)
    await app.start()
    await wait_for_stop_signal()
    await app.stop()


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
    elif not args:
        asyncio.run(serve(settings))
    else:
        print("usage: the0-server [migrate]", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
