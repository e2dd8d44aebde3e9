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

from the0.server import metrics
from the0.server.app import build
from the0.server.db.migrate import upgrade_to_head
from the0.server.settings import Settings, SettingsError, database_url_from_env
from the0.server.startup_errors import describe_database_error, fail
from the0.server.structured_logging import configure_logging
from the0.server.workers import PortInUse, Supervisor, check_port_is_free


def run_until_stopped(settings: Settings) -> None:
    """``the0-server``: serve in one process or THE0_WORKERS, start-up failures as one line (exit 2)."""
    if problems := settings.serving_problems():
        raise fail(str(SettingsError(problems)))
    try:
        if settings.workers > 1:
            raise SystemExit(serve_with_workers(settings))
        if settings.grpc_port != 0:
            check_port_is_free(settings.grpc_host, settings.grpc_port)
        asyncio.run(serve(settings))
    except PortInUse as error:
        raise fail(f"{error} (THE0_GRPC_PORT / THE0_GRPC_HOST)") from None
    except Exception as error:
        described = describe_database_error(error, settings.effective_database_url)
        if described is None:
            raise
        raise fail(described) from None


def migrate_only() -> None:
    """``the0-server migrate``: DATABASE_URL is the one setting it reads."""
    try:
        database_url = database_url_from_env(os.environ)
    except SettingsError as error:
        raise fail(str(error)) from None
    try:
        upgrade_to_head(database_url)
    except Exception as error:
        described = describe_database_error(error, database_url)
        if described is None:
            raise
        raise fail(described) from None


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
    check_port_is_free(settings.grpc_host, settings.grpc_port)
    upgrade_to_head(settings.effective_database_url)
    if not settings.metrics_port:
        return Supervisor(settings.workers, run_worker, grace_seconds=settings.shutdown_grace_seconds).run()
    # One /metrics for the replica, summed over the workers' files (metrics.py).
    directory = metrics.prepare_multiprocess_dir()
    stop_metrics = metrics.serve_multiprocess_metrics(settings.metrics_port, settings.grpc_host)
    try:
        return Supervisor(settings.workers, run_worker, grace_seconds=settings.shutdown_grace_seconds,
                          on_death=metrics.worker_died).run()
    finally:
        stop_metrics()
        metrics.remove_multiprocess_dir(directory)


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
