"""The server's long-running background tasks, started by components and stopped once by the App.

Components say "run this forever" (``tasks.spawn(name, coroutine)``); the App
owns the one ``BackgroundTasks`` and stops it once at shutdown, after the gRPC
server has drained and before the components close what the tasks used (NATS,
the database).

Unlike ``asyncio.TaskGroup``, one task that dies does not cancel the others: a
replica whose outbox relay crashed should still serve requests and consume
events. The failure is logged with its traceback when it happens, not lost
until the task is garbage-collected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("the0.background")

# How often a cancellation is sent again to a task that has not ended.
RECANCEL_SECONDS = 1.0


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = RECANCEL_SECONDS) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every ``every`` seconds.

    Once is not enough on Python 3.11: ``asyncio.wait_for`` (which nats-py's ``fetch`` uses)
    returns its result and drops the cancellation when both arrive together (CPython
    gh-86296, fixed in 3.12), and a fetch loop then runs on forever. Only a task's end,
    not its CancelledError, is waited for here; the caller's own cancellation propagates.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every)


class BackgroundTasks:
    def __init__(self) -> None:
        # In start order; a task leaves when it ends (by itself or at stop).
        self._running: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def names(self) -> list[str]:
        return [task.get_name() for task in self._running]

    def spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coroutine`` until it returns, fails (logged) or ``stop`` cancels it."""
        if self._stopping:
            coroutine.close()
            raise RuntimeError(f"cannot start {name!r}: the background tasks are stopping")
        task = asyncio.create_task(coroutine, name=name)
        self._running.append(task)
        task.add_done_callback(self._finished)
        return task

    async def stop(self) -> None:
        """Cancel every task, newest first, each awaited before the next is cancelled.

        Newest first because later tasks may use what earlier ones set up (the
        event stream and consumers wait for the NATS connection).
        """
        self._stopping = True
        try:
            while self._running:
                task = self._running[-1]
                # The task's own CancelledError (or failure, already logged) must not
                # end stop(); ours still propagates.
                await cancel_and_wait(task)
                if self._running and self._running[-1] is task:
                    self._running.pop()
        finally:
            self._stopping = False

    def _finished(self, task: asyncio.Task[None]) -> None:
        if task in self._running:
            self._running.remove(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "background task failed",
                exc_info=(type(error), error, error.__traceback__),
                extra={"task": task.get_name()},
            )
