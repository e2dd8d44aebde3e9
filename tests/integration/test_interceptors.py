"""The interceptor chain around every RPC cardinality, on a real grpc.aio server.

Test RPCs use raw bytes (identity codec) so the chain is exercised alone.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from the0.server.errors import FieldViolation, InvalidArgument, NotFound
from the0.server.interceptors.error_mapping import ErrorMappingInterceptor
from the0.server.interceptors.request_logging import RequestLoggingInterceptor
from the0.server.request_context import current_request_id
from the0.server.structured_logging import AccessLog

SERVICE = "test.Chain"


async def unary_ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return current_request_id().encode()


async def unary_invalid(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise InvalidArgument(
        "2 fields are invalid",
        violations=[FieldViolation("config.symbol", "is required"), FieldViolation("name", "too long")],
    )


async def unary_bug(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("secret internal detail")


async def stream_then_fail(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    raise NotFound("gone mid-stream")


async def client_stream_fail(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    async for _ in requests:
        raise InvalidArgument("bad chunk")
    return b""


async def bidi_bug(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for chunk in requests:
        yield chunk
        raise ZeroDivisionError("boom")


@pytest.fixture
def access_log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
async def channel(access_log) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(
        interceptors=[RequestLoggingInterceptor(AccessLog(access_log)), ErrorMappingInterceptor()]
    )
    handlers = {
        "UnaryOk": grpc.unary_unary_rpc_method_handler(unary_ok),
        "UnaryInvalid": grpc.unary_unary_rpc_method_handler(unary_invalid),
        "UnaryBug": grpc.unary_unary_rpc_method_handler(unary_bug),
        "StreamThenFail": grpc.unary_stream_rpc_method_handler(stream_then_fail),
        "ClientStreamFail": grpc.stream_unary_rpc_method_handler(client_stream_fail),
        "BidiBug": grpc.stream_stream_rpc_method_handler(bidi_bug),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == "api.the0.dev"
    return info.reason


async def test_unary_success_sees_the_callers_request_id(channel):
    call = channel.unary_unary(f"/{SERVICE}/UnaryOk")(b"", metadata=(("x-request-id", "abc-123"),))
    assert await call == b"abc-123"
    assert ("x-request-id", "abc-123") in tuple(await call.trailing_metadata())


async def test_unary_without_request_id_gets_a_fresh_one(channel):
    call = channel.unary_unary(f"/{SERVICE}/UnaryOk")(b"", metadata=(("x-request-id", "bad id with spaces {}"),))
    request_id = (await call).decode()
    assert len(request_id) >= 20 and request_id.isalnum()
    second = await channel.unary_unary(f"/{SERVICE}/UnaryOk")(b"")
    assert second.decode() != request_id


async def test_invalid_argument_carries_one_violation_per_field(channel):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/UnaryInvalid")(b"")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "VALIDATION_FAILED"
    bad_request = error_details_pb2.BadRequest()
    assert rpc_status.from_call(raised.value).details[1].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("config.symbol", "is required"),
        ("name", "too long"),
    ]


async def test_unexpected_exception_is_internal_with_a_generic_message(channel, caplog):
    caplog.set_level(logging.ERROR, logger="the0.errors")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/UnaryBug")(b"")
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert reason_of(raised.value) == "INTERNAL"
    assert "secret internal detail" not in raised.value.details()
    assert "request id" in raised.value.details()
    assert "secret internal detail" in caplog.text  # the traceback is in the server log only


async def test_server_stream_error_after_first_message_keeps_details(channel):
    call = channel.unary_stream(f"/{SERVICE}/StreamThenFail")(b"")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in call:
            received.append(message)
    assert received == [b"first"]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raised.value) == "NOT_FOUND"


async def test_client_stream_errors_are_mapped(channel):
    async def chunks():
        yield b"a"
        yield b"b"

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.stream_unary(f"/{SERVICE}/ClientStreamFail")(chunks())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "VALIDATION_FAILED"


async def test_bidi_stream_bug_is_internal(channel):
    async def chunks():
        yield b"x"

    call = channel.stream_stream(f"/{SERVICE}/BidiBug")(chunks())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert reason_of(raised.value) == "INTERNAL"


async def test_every_rpc_is_logged_once_as_json_with_its_code(channel, access_log):
    await channel.unary_unary(f"/{SERVICE}/UnaryOk")(b"", metadata=(("x-request-id", "r1"),))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/UnaryInvalid")(b"", metadata=(("x-request-id", "r2"),))
    assert ("x-request-id", "r2") in tuple(raised.value.trailing_metadata())
    lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
    assert [(e["method"], e["code"], e["requestId"]) for e in lines] == [
        (f"/{SERVICE}/UnaryOk", "OK", "r1"),
        (f"/{SERVICE}/UnaryInvalid", "INVALID_ARGUMENT", "r2"),
    ]
    assert all(e["durationMs"] >= 0 and e["level"] == "info" for e in lines)


def test_unknown_error_reasons_are_refused_at_the_raise_site():
    with pytest.raises(ValueError):
        NotFound("x", reason="NO_SUCH_REASON")
