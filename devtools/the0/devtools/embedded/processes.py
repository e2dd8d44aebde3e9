"""Small helpers for running a server binary as a child process.

Generic on purpose: the embedded NATS server and the Envoy launcher both use
them. A child's stdout and stderr go to a log file (appended, so a restart
keeps the earlier output), and its tail is quoted when it fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

# Pause between readiness probes: short, because the binaries start in ~0.1 s.
_PROBE_INTERVAL = 0.02
# Linux's util-linux `setpriv` sets the parent-death signal and then execs the
# binary, so the child needs no Python code between fork and exec.
_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


def _die_with_parent(argv: list[str]) -> list[str]:
    """The argv that SIGTERMs the child when its parent dies, even by SIGKILL or a CI
    timeout, so no nats-server or Envoy outlives the dev stack or a test run.

    Why not ``preexec_fn`` with prctl: it makes subprocess fork() the whole
    interpreter instead of vfork()/posix_spawn, which runs gRPC's fork handlers
    in the child; a test that restarted nats-server while gRPC threads were busy
    saw the child abort (SIGABRT) before exec. (Linux ties the death signal to
    the thread that spawned: start children from the main thread.) Elsewhere,
    or without setpriv, children are started plainly.

    One window stays open: a parent killed in the first milliseconds, before setpriv
    has set the signal, leaves the child behind (setpriv does not check getppid()
    afterwards). Every caller waits for its child to be ready long after that.
    """
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; a small race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """One child process with its output in ``log_path``.

    ``stop()`` sends SIGTERM, waits up to ``timeout`` seconds, then SIGKILLs.
    ``start()`` may be called again after ``stop()`` (same argv, same log).
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        self.name = name or Path(self.argv[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited, else None."""
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self._proc = subprocess.Popen(
                _die_with_parent(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s. Blocks: from async code use ``astop``."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return proc.wait()

    async def astop(self, timeout: float = 5.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the log, for error messages."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - max_bytes))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise RuntimeError, quoting the log, if the child has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self._proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _try_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_tcp_sync(
    host: str, port: int, timeout: float = 10.0, *, process: ChildProcess | None = None
) -> None:
    """Block until ``host:port`` accepts a connection; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while not _try_connect(host, port):
        if process is not None:
            process.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout} s")
        time.sleep(_PROBE_INTERVAL)


async def wait_for_tcp(
    host: str, port: int, timeout: float = 10.0, *, process: ChildProcess | None = None
) -> None:
    """Wait until ``host:port`` accepts a connection; fail early if ``process`` exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
        except (OSError, TimeoutError):
            pass
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        if process is not None:
            process.check_alive()
        if loop.time() > deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout} s")
        await asyncio.sleep(_PROBE_INTERVAL)
