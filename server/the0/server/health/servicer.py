"""HealthService.GetHealth: the dependency checks as a document, 503 without a database.

Served through ``SharedChecks``: a result at most a second old, one probe run in flight.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc.aio
from google.protobuf import duration_pb2, timestamp_pb2

from the0.health.v1 import health_service_pb2, health_service_pb2_grpc
from the0.server.errors import Unavailable
from the0.server.health.checks import OK, DependencyChecks, SharedChecks


class HealthServicer(health_service_pb2_grpc.HealthServiceServicer):
    def __init__(self, checks: DependencyChecks, *, version: str, max_age: float = 1.0) -> None:
        self._checks = SharedChecks(checks, max_age=max_age)
        self._version = version
        self._started = time.monotonic()

    async def GetHealth(
        self,
        request: health_service_pb2.GetHealthRequest,
        context: grpc.aio.ServicerContext[health_service_pb2.GetHealthRequest, health_service_pb2.GetHealthResponse],
    ) -> health_service_pb2.GetHealthResponse:
        results = await self._checks.run()
        if results.database != OK:
            # Without its database the server can serve nothing: say so with 503.
            raise Unavailable(
                "database unreachable",
                metadata={"database": results.database, "nats": results.nats, "objectStore": results.object_store},
            )
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(datetime.now(UTC))
        uptime = duration_pb2.Duration()
        uptime.FromNanoseconds(int((time.monotonic() - self._started) * 1e9))
        return health_service_pb2.GetHealthResponse(
            status="ok" if results.all_ok else "degraded",
            timestamp=now,
            uptime=uptime,
            version=self._version,
            checks=health_service_pb2.HealthChecks(
                database=results.database, nats=results.nats, object_store=results.object_store
            ),
        )
