"""The innermost interceptor: decodes every request itself and runs the input gate on it.

gRPC would otherwise decode requests before any interceptor runs, and a malformed body
(truncated field, invalid UTF-8, overflowing varint, nesting past the decoder's limit)
would surface as UNKNOWN carrying a Python class name, with no access line. Here the
handler gRPC sees takes raw bytes; decoding happens inside the interceptor chain, so a
bad body is the client's INVALID_ARGUMENT (reason MALFORMED_REQUEST), logged as a
warning with the request id, and every decoded message passes ``check_request`` before
the servicer sees it. Streaming requests are decoded and checked message by message.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from the0.server.errors import InvalidArgument
from the0.server.input_gate import check_request
from the0.server.interceptors.wrapping import AnyContext, AnyHandler, HandlerRewriter

log = logging.getLogger("the0.input")

Decode = Callable[[bytes], Any]


class InputGateInterceptor(HandlerRewriter):
    def rewrite(self, handler: AnyHandler, method: str) -> AnyHandler:
        if handler.request_deserializer is None:
            return handler  # a generic handler that takes raw bytes has nothing to decode
        return gate_handler(handler, method)


def gate_handler(handler: AnyHandler, method: str) -> AnyHandler:
    decode = handler.request_deserializer
    if decode is None:  # the caller passes only handlers that decode their requests
        return handler
    serialize = handler.response_serializer
    if handler.unary_unary:
        inner_uu: Callable[..., Awaitable[Any]] = handler.unary_unary

        async def unary_unary(raw: bytes, context: AnyContext) -> Any:
            return await inner_uu(_admit(decode, raw, method), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serialize)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(raw: bytes, context: AnyContext) -> AsyncIterator[Any]:
            async for response in _responses(inner_us, _admit(decode, raw, method), context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, serialize)
    if handler.stream_unary:
        inner_su: Callable[..., Awaitable[Any]] = handler.stream_unary

        async def stream_unary(raws: AsyncIterator[bytes], context: AnyContext) -> Any:
            return await inner_su(_admit_each(decode, raws, method), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serialize)
    if handler.stream_stream:
        inner_ss = handler.stream_stream

        async def stream_stream(raws: AsyncIterator[bytes], context: AnyContext) -> AsyncIterator[Any]:
            async for response in _responses(inner_ss, _admit_each(decode, raws, method), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(stream_stream, None, serialize)
    raise TypeError(f"handler for {method} has no behaviour")


async def _responses(inner: Callable[..., Any], request: Any, context: AnyContext) -> AsyncIterator[Any]:
    """The responses of a streaming handler, whether it yields them or writes them itself
    with ``context.write()`` (grpc's own health servicer does)."""
    if inspect.isasyncgenfunction(inner):
        async for response in inner(request, context):
            yield response
    else:
        await inner(request, context)


def _admit(decode: Decode, raw: bytes, method: str) -> Any:
    try:
        request = decode(raw)
    except (DecodeError, RecursionError, UnicodeDecodeError) as error:
        # The client's mistake, not ours: a warning (with the request id from the
        # logging context), never a traceback, and nothing of the parser's text.
        log.warning("malformed request body", extra={"method": method, "error_type": type(error).__name__})
        raise InvalidArgument(
            "the request body is not a valid protobuf message of this method "
            "(truncated, invalid UTF-8 text, or nested too deeply)",
            reason="MALFORMED_REQUEST",
        ) from None
    check_request(request)
    return request


async def _admit_each(decode: Decode, raws: AsyncIterator[bytes], method: str) -> AsyncIterator[Any]:
    async for raw in raws:
        yield _admit(decode, raw, method)
