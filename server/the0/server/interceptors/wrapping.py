"""Wrap the real handler of every RPC, whatever its cardinality.

An interceptor supplies ``around(method, context)``: an async context manager
that runs around the whole call — for streams, around the whole stream, so
errors raised mid-stream are seen too. Unary and streaming RPCs therefore go
through the same code, and no interceptor can forget the streaming ones.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import grpc.aio


class WrappingInterceptor(grpc.aio.ServerInterceptor, ABC):
    def __init__(self) -> None:
        # intercept_service runs for every call; wrap each method's handler once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @abstractmethod
    def around(self, method: str, context: grpc.aio.ServicerContext) -> AbstractAsyncContextManager[None]:
        """What to run around one call of ``method`` (e.g. ``/the0.bot.v1.BotService/GetBot``)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap_handler(handler, method, self.around)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


Around = Callable[[str, grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, around: Around) -> grpc.RpcMethodHandler:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_wrap_single(handler.unary_unary, method, around), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_wrap_single(handler.stream_unary, method, around), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method, around), **codec)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, method, around), **codec)
    raise TypeError(f"handler for {method} has no behaviour")


def _wrap_single(inner: Callable[..., Any], method: str, around: Around) -> Callable[..., Awaitable[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(method, context):
            return await inner(request, context)

    return behaviour


def _wrap_stream(inner: Callable[..., Any], method: str, around: Around) -> Callable[..., AsyncIterator[Any]]:
    is_generator = inspect.isasyncgenfunction(inner)

    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(method, context):
            if is_generator:
                async for response in inner(request, context):
                    yield response
            else:  # a handler that writes with context.write() and returns
                await inner(request, context)

    return behaviour
