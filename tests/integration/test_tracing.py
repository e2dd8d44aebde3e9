"""Traces (tracing.py): a server span per RPC carrying its request id when OTEL_EXPORTER_OTLP_ENDPOINT is set;
without it nothing of OpenTelemetry is imported and the chain is unchanged."""

from __future__ import annotations

import subprocess
import sys

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from the0.server.app import interceptor_chain, with_tracing
from the0.server.interceptors.error_mapping import ErrorMappingInterceptor
from the0.server.interceptors.request_logging import RequestLoggingInterceptor
from the0.server.settings import Settings
from the0.server.tracing import TracingInterceptor


def test_without_an_endpoint_nothing_of_opentelemetry_is_loaded() -> None:
    chain = interceptor_chain()
    assert with_tracing(chain, Settings()) == chain
    code = ("import sys; from the0.server.app import build, with_tracing, interceptor_chain; "
            "from the0.server.settings import Settings; with_tracing(interceptor_chain(), Settings()); "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "False"


async def _ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no")
    raise AssertionError


async def test_a_span_per_rpc_with_the_request_id_and_the_code() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server(interceptors=[RequestLoggingInterceptor(), TracingInterceptor(provider.get_tracer("t")),
                                           ErrorMappingInterceptor()])
    handlers = {"Ok": grpc.unary_unary_rpc_method_handler(_ok), "Missing": grpc.unary_unary_rpc_method_handler(_missing)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Svc", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary("/t.Svc/Ok")(b"x", metadata=(("x-request-id", "req-1"),)) == b"x"
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary("/t.Svc/Missing")(b"", metadata=(("x-request-id", "req-2"),))
    finally:
        await server.stop(None)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["t.Svc/Ok"].attributes["the0.request_id"] == "req-1"
    assert spans["t.Svc/Ok"].attributes["rpc.grpc.status_code"] == 0
    assert spans["t.Svc/Missing"].attributes["the0.request_id"] == "req-2"
    assert spans["t.Svc/Missing"].attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
