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
from typing import Any, TypeAlias

import grpc
import grpc.aio

# An interceptor sees every RPC, whatever its request and response messages:
# for it they are opaque values handed from gRPC to the handler and back.
# (Strings: grpc's classes are generic in the stubs only, not at run time.)
AnyContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
AnyHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Around: TypeAlias = "Callable[[str, AnyContext], AbstractAsyncContextManager[None]]"


class HandlerRewriter(grpc.aio.ServerInterceptor, ABC):
    """An interceptor that replaces each method's handler, once per method.

    ``intercept_service`` runs for every call; the replacement is built on the first call of
    a method and reused while the inner handler stays the same object.
    """

    def __init__(self) -> None:
        self._rewritten: dict[str, tuple[AnyHandler, AnyHandler]] = {}

    @abstractmethod
    def rewrite(self, handler: AnyHandler, method: str) -> AnyHandler:
        """The handler to serve ``method`` with instead of ``handler`` (may be ``handler`` itself)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[AnyHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> AnyHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._rewritten.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        rewritten = self.rewrite(handler, method)
        self._rewritten[method] = (handler, rewritten)
        return rewritten


class WrappingInterceptor(HandlerRewriter):
    @abstractmethod
    def around(self, method: str, context: AnyContext) -> AbstractAsyncContextManager[None]:
        """What to run around one call of ``method`` (e.g. ``/the0.bot.v1.BotService/GetBot``)."""

    def rewrite(self, handler: AnyHandler, method: str) -> AnyHandler:
        return wrap_handler(handler, method, self.around)


def wrap_handler(handler: AnyHandler, method: str, around: Around) -> AnyHandler:
    codec = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_wrap_single(handler.unary_unary, method, around), *codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_wrap_single(handler.stream_unary, method, around), *codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method, around), *codec)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, method, around), *codec)
    raise TypeError(f"handler for {method} has no behaviour")


def _wrap_single(inner: Callable[..., Any], method: str, around: Around) -> Callable[[Any, AnyContext], Awaitable[Any]]:
    async def behaviour(request: Any, context: AnyContext) -> Any:
        async with around(method, context):
            return await inner(request, context)

    return behaviour


def _wrap_stream(
    inner: Callable[..., Any], method: str, around: Around
) -> Callable[[Any, AnyContext], AsyncIterator[Any]]:
    is_generator = inspect.isasyncgenfunction(inner)

    async def behaviour(request: Any, context: AnyContext) -> AsyncIterator[Any]:
        async with around(method, context):
            if is_generator:
                async for response in inner(request, context):
                    yield response
            else:  # a handler that writes with context.write() and returns
                await inner(request, context)

    return behaviour
