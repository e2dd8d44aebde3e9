"""Real checks of each dependency, run concurrently with a deadline each.

GetHealth is public, so a flood of it must not become a flood of database, NATS
and S3 probes: ``SharedChecks`` serves a result at most ``max_age`` old and
runs one set of probes at a time, which every concurrent caller shares.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("the0.health")

OK, DOWN = "ok", "down"
CHECK_TIMEOUT_SECONDS = 2.0

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CheckResults:
    database: str
    nats: str
    object_store: str

    @property
    def all_ok(self) -> bool:
        return self.database == self.nats == self.object_store == OK


class DependencyChecks:
    """Each probe raises when its dependency is unusable."""

    def __init__(self, *, database: Probe, nats: Probe, object_store: Probe) -> None:
        self._probes = {"database": database, "nats": nats, "object_store": object_store}

    async def run(self) -> CheckResults:
        names = list(self._probes)
        outcomes = await asyncio.gather(*(self._check(name) for name in names))
        return CheckResults(**dict(zip(names, outcomes, strict=True)))

    async def _check(self, name: str) -> str:
        try:
            await asyncio.wait_for(self._probes[name](), CHECK_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001  any failure means "down"; the reason goes to the log
            log.warning("health check failed", extra={"check": name, "error": repr(error)})
            return DOWN
        return OK


class SharedChecks:
    """``DependencyChecks.run`` at most once per ``max_age`` seconds, one run in flight at a time."""

    def __init__(self, checks: DependencyChecks, *, max_age: float = 1.0) -> None:
        self._checks = checks
        self._max_age = max_age
        self._latest: tuple[float, CheckResults] | None = None
        self._running: asyncio.Task[CheckResults] | None = None

    async def run(self) -> CheckResults:
        if self._latest is not None and time.monotonic() - self._latest[0] < self._max_age:
            return self._latest[1]
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())
        # Shielded: a caller that gives up (deadline, disconnect) does not cancel the others' run.
        return await asyncio.shield(self._running)

    async def _run(self) -> CheckResults:
        try:
            results = await self._checks.run()
        finally:
            self._running = None
        # Aged from when it finished: the probes saw the dependencies up to then.
        self._latest = (time.monotonic(), results)
        return results
