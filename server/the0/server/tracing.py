"""OpenTelemetry traces: a server span per RPC with its request id, only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Without the variable nothing of OpenTelemetry is imported and no interceptor is added: zero cost.
With it, spans go to that OTLP/gRPC endpoint in batches (the ``otel`` extra: ``the0-api[otel]``);
the standard OTEL_* variables (service name, headers, sampler) are read by the SDK itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio

from the0.server.interceptors.wrapping import AnyContext, WrappingInterceptor
from the0.server.request_context import request_id_var
from the0.server.settings import Settings


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    if not settings.otel_endpoint:
        return []
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "the0-api"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
    trace.set_tracer_provider(provider)
    return [TracingInterceptor(trace.get_tracer("the0.server"))]


class TracingInterceptor(WrappingInterceptor):
    """Innermost of the request-id interceptor, so the span carries the call's id."""

    def __init__(self, tracer: Any) -> None:
        super().__init__()
        self._tracer = tracer

    @asynccontextmanager
    async def around(self, method: str, context: AnyContext) -> AsyncIterator[None]:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        service, _, name = method.lstrip("/").partition("/")
        with self._tracer.start_as_current_span(method.lstrip("/"), kind=SpanKind.SERVER) as span:
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", service)
            span.set_attribute("rpc.method", name)
            span.set_attribute("the0.request_id", request_id_var.get() or "")
            try:
                yield
            except BaseException:
                code = context.code()
                span.set_attribute("rpc.grpc.status_code", code.value[0] if isinstance(code, grpc.StatusCode) else 2)
                span.set_status(Status(StatusCode.ERROR))
                raise
            span.set_attribute("rpc.grpc.status_code", 0)
