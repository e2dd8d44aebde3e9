"""Real checks of each dependency, run concurrently with a deadline each."""

from __future__ import annotations

import asyncio
import logging
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
