"""THE0_WORKERS: N server processes on one port, each a whole replica.

One Python process serves on one core. ``the0-server`` with N > 1 workers applies the
migrations once, checks that nobody listens on the port yet, then starts N worker processes
that each bind it with SO_REUSEPORT; the kernel spreads new connections over them. Each
worker is exactly what a replica on another machine is, so the state one process keeps
(read cache, revoked sessions and keys, watch streams) stays true through the same NATS
fan-out that keeps replicas true. Limits counted per process (docs/limits.md) count per
worker.

The supervisor forwards SIGTERM/SIGINT to every worker and waits for their graceful stop.
A worker that dies is started again, unless workers keep dying (a crash loop), in which
case everything stops with exit code 1 so the orchestrator sees it.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("the0.workers")

# More deaths than this within CRASH_WINDOW_SECONDS is a crash loop: stop, do not respawn.
MAX_RESTARTS = 5
CRASH_WINDOW_SECONDS = 60.0


class PortInUse(RuntimeError):
    """Something already listens on the server's port."""


def check_port_is_free(host: str, port: int) -> None:
    """Bind without SO_REUSEPORT: this fails while any socket, even one that allows sharing, holds the port.

    Workers share the port with SO_REUSEPORT; without this check a second ``the0-server`` (or any
    process of the same user that set the option) would silently take a share of the traffic.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))
    except OSError as error:
        raise PortInUse(f"{host}:{port} is already in use ({error.strerror}); is another the0-server running?") from None
    finally:
        probe.close()


class Supervisor:
    def __init__(
        self, count: int, target: Callable[[int], None], *, grace_seconds: float,
        on_death: Callable[[int], None] | None = None,
    ) -> None:
        # Told the pid of each worker that ended (metrics drop its live gauges).
        self._on_death = on_death
        self._count = count
        self._target = target
        self._grace = grace_seconds
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._deaths: deque[float] = deque()
        self._stopping = False

    def run(self) -> int:
        """Until a stop signal (exit code 0) or a crash loop (1)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(self._count):
                self._start(index)
            log.info("workers started", extra={"workers": self._count})
            while not self.stop_requested():
                sentinels = [worker.sentinel for worker in self._workers.values()]
                multiprocessing.connection.wait(sentinels, timeout=0.5)
                if self.stop_requested():  # a worker that exits on our signal is not a death
                    break
                for index, worker in list(self._workers.items()):
                    if worker.exitcode is None:
                        continue
                    if self._on_death is not None and worker.pid is not None:
                        self._on_death(worker.pid)
                    if self._crash_loop():
                        log.error("workers keep dying: stopping", extra={"exitCode": worker.exitcode})
                        self._stop_all()
                        return 1
                    log.error("worker died; starting it again",
                              extra={"worker": index, "exitCode": worker.exitcode})
                    self._start(index)
            self._stop_all()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop_requested(self) -> bool:
        return self._stopping

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, index: int) -> None:
        worker = self._context.Process(target=self._target, args=(index,), name=f"the0-worker-{index}")
        worker.start()
        self._workers[index] = worker

    def _crash_loop(self) -> bool:
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > CRASH_WINDOW_SECONDS:
            self._deaths.popleft()
        return len(self._deaths) > MAX_RESTARTS

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains its RPCs), SIGKILL to any still running after the grace."""
        for worker in self._workers.values():
            if worker.exitcode is None and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10
        for worker in self._workers.values():
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.exitcode is None:
                log.error("worker did not stop in time: killed", extra={"pid": worker.pid})
                worker.kill()
                worker.join(5)
        log.info("workers stopped")
