"""Serving the app: one process, or THE0_WORKERS processes under a supervisor (workers.py).

Its own module, not ``__main__``: worker processes are started with ``spawn`` and find their
entry point, ``run_worker``, by module name.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys

from the0.server.app import build
from the0.server.db.migrate import upgrade_to_head
from the0.server.settings import Settings, SettingsError
from the0.server.structured_logging import configure_logging
from the0.server.workers import PortInUse, Supervisor, check_port_is_free


async def serve(settings: Settings, *, migrate: bool = True) -> None:
    if migrate:
        await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
    app = await build(settings)
    await app.start()
    # What exists now (modules, descriptors, the app) lives as long as the process: keep it out of
    # every later collection, whose pauses would otherwise walk it again and again.
    gc.collect()
    gc.freeze()
    await wait_for_stop_signal()
    await app.stop()


def serve_with_workers(settings: Settings) -> int:
    """Migrations once, then THE0_WORKERS processes sharing the port (workers.py)."""
    upgrade_to_head(settings.effective_database_url)
    try:
        check_port_is_free(settings.grpc_host, settings.grpc_port)
    except PortInUse as error:
        print(f"the0: {error}", file=sys.stderr)
        return 2
    return Supervisor(settings.workers, run_worker, grace_seconds=settings.shutdown_grace_seconds).run()


def run_worker(index: int) -> None:
    """One worker process: the settings again from the environment, then serve (no migrations)."""
    settings = load_settings(dev_mode=False)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings, migrate=False))


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
