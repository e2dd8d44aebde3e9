"""Server streams end when the credentials they were opened with do.

A watch is authenticated once, when it opens; without this it would outlive a
logout, a revoked API key or an expired token for as long as its heartbeats
keep it alive. Each guarded stream waits on one asyncio.Event of its session or
key (identity/revocations.py sets it when the revocation reaches this replica,
by NATS within a round trip, by the database sync otherwise) and on its
credential's expiry, never polling.

When either comes, the stream sends a last message saying so if its response
has a ``the0.common.v1.Unauthenticated`` field (the Watch*Response oneofs: an
error after the first message never reaches an HTTP/1.1 client through Envoy),
then ends with UNAUTHENTICATED and the reason TOKEN_REVOKED, TOKEN_EXPIRED or
API_KEY_INVALID.

The handler runs in the RPC's own task, as it would unguarded (ContextVars and
``asyncio.timeout`` inside it stay valid). A watcher task cancels that task only
while it is inside the handler; between messages the stream just stops asking
for the next one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from the0.server.errors import Unauthenticated
from the0.server.identity.principal import Principal, principal_var
from the0.server.interceptors.wrapping import AnyContext, AnyHandler

TERMINAL_MESSAGE = "the0.common.v1.Unauthenticated"
SignalFor = Callable[[Principal], AbstractContextManager[asyncio.Event]]


def guard_stream(handler: AnyHandler, method: str, signal_for: SignalFor) -> AnyHandler:
    """``handler`` with its server stream guarded; unary responses are returned as they are."""
    codec = handler.request_deserializer, handler.response_serializer
    terminal = _terminal_message(method)
    if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
        return grpc.unary_stream_rpc_method_handler(_guarded(handler.unary_stream, signal_for, terminal), *codec)
    if handler.stream_stream and inspect.isasyncgenfunction(handler.stream_stream):
        return grpc.stream_stream_rpc_method_handler(_guarded(handler.stream_stream, signal_for, terminal), *codec)
    return handler


def _terminal_message(method: str) -> Callable[[str], Message] | None:
    """Builds the response that says the credentials ended, if the method's response has such a field."""
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    except KeyError:  # a method no proto describes (a benchmark's echo)
        return None
    fields: list[FieldDescriptor] = [
        f for f in descriptor.output_type.fields if f.message_type and f.message_type.full_name == TERMINAL_MESSAGE
    ]
    if not fields:
        return None
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    name = fields[0].name

    def build(reason: str) -> Message:
        response = response_class()
        ended = getattr(response, name)
        ended.reason = reason
        ended.time.FromDatetime(datetime.now(UTC))
        return response

    return build


_MESSAGES = {
    "TOKEN_EXPIRED": "the access token has expired; refresh it and watch again",
    "TOKEN_REVOKED": "the session of this access token was logged out",
    "API_KEY_INVALID": "the API key was revoked or has expired",
}


async def _end_reason(principal: Principal, revoked: asyncio.Event) -> str:
    """Wait until the credential ends; say why (an ErrorReason)."""
    expiry = None if principal.expires_at is None else principal.expires_at.timestamp() - datetime.now(UTC).timestamp()
    try:
        async with asyncio.timeout(expiry):
            await revoked.wait()
    except TimeoutError:
        return "API_KEY_INVALID" if principal.auth_kind == "api_key" else "TOKEN_EXPIRED"
    return "API_KEY_INVALID" if principal.auth_kind == "api_key" else "TOKEN_REVOKED"


def _guarded(
    inner: Callable[..., AsyncGenerator[Any, None]], signal_for: SignalFor, terminal: Callable[[str], Message] | None
) -> Callable[[Any, AnyContext], AsyncIterator[Any]]:
    async def behaviour(request: Any, context: AnyContext) -> AsyncIterator[Any]:
        principal = principal_var.get()
        if principal is None:  # not authenticated (cannot happen behind around(): nothing to guard)
            async for response in inner(request, context):
                yield response
            return
        rpc_task = asyncio.current_task()
        reasons: list[str] = []
        inside_handler = False

        async def watch(revoked: asyncio.Event) -> None:
            reasons.append(await _end_reason(principal, revoked))
            if inside_handler and rpc_task is not None:
                rpc_task.cancel()

        with signal_for(principal) as revoked:
            watcher = asyncio.get_running_loop().create_task(watch(revoked))
            stream = inner(request, context)
            try:
                while not reasons:
                    inside_handler = True
                    try:
                        response = await anext(stream)
                    except StopAsyncIteration:
                        return
                    except asyncio.CancelledError:
                        # Ours (the credential ended) unless someone else cancelled the RPC too.
                        if not reasons or rpc_task is None or rpc_task.uncancel() > 0:
                            raise
                        break
                    finally:
                        inside_handler = False
                    yield response
            finally:
                watcher.cancel()  # not awaited: that would swallow a cancellation of the RPC itself
                await stream.aclose()
        if terminal is not None:
            yield terminal(reasons[0])
        raise Unauthenticated(_MESSAGES[reasons[0]], reason=reasons[0])

    return behaviour
