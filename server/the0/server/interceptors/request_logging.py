"""Outermost interceptor: a request id for every RPC and one JSON access line per call.

The id is Envoy's ``x-request-id`` when present (so REST and gRPC logs join up),
else a new one. It is returned in the trailing metadata (Envoy echoes it as a
response header for REST clients).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import grpc.aio

from the0.server.interceptors.wrapping import AnyContext, WrappingInterceptor
from the0.server.metrics import RpcRecorder
from the0.server.request_context import CallOrigin, call_origin_var, request_id_var
from the0.server.structured_logging import AccessLog

# Accept only sane ids from clients: they end up in every log line.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Health probes from Envoy and load balancers would drown the access log.
_QUIET_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
# Unique across replicas and restarts without a syscall per call.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


class RequestLoggingInterceptor(WrappingInterceptor):
    def __init__(self, access_log: AccessLog | None = None) -> None:
        super().__init__()
        self._access_log = access_log or AccessLog()
        # The RPC series of metrics.py: requests by method and code, durations, open streams.
        self._metrics = RpcRecorder()

    @asynccontextmanager
    async def around(self, method: str, context: AnyContext) -> AsyncIterator[None]:
        request_id = _incoming_request_id(context) or new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        code = "OK"
        # Read before the call: after a client cancels a stream, context.peer() in grpcio 1.85 crashes
        # the process (SIGSEGV in cygrpc).
        peer = context.peer()
        origin_token = call_origin_var.set(CallOrigin(peer or "", context.invocation_metadata() or ()))
        streams = self._metrics.stream_gauge(method)
        if streams is not None:
            streams.inc()
        try:
            context.set_trailing_metadata((("x-request-id", request_id),))
            yield
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            status = context.code()
            code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            seconds = time.perf_counter() - started
            if streams is not None:
                streams.dec()
            if method not in _QUIET_METHODS:
                self._metrics.finished(method, code, seconds)
            if self._access_log.enabled and method not in _QUIET_METHODS:
                self._access_log.write(
                    method=method,
                    code=code,
                    duration_ms=seconds * 1000,
                    peer=peer,
                    request_id=request_id,
                )
            request_id_var.reset(token)
            call_origin_var.reset(origin_token)


def _incoming_request_id(context: AnyContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _VALID_ID.match(value):
            return value
    return None
