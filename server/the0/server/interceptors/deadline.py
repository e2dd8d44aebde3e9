"""Every unary RPC is bounded server-side: the server's own limit or the caller's deadline,
whichever is sooner.

A frozen database (or object store) answers nothing and closes nothing, so without a bound
a call waits as long as its client does, holding a pooled connection the whole time.
PostgreSQL's ``statement_timeout`` cancels slow statements on the server; this bound also
covers a server that cannot answer at all. Streaming RPCs are not bounded as a whole (a
watch lasts for hours): they bound each of their own reads instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import grpc.aio

from the0.server.errors import DeadlineExceeded, Unavailable
from the0.server.interceptors.wrapping import AnyContext, AnyHandler, HandlerRewriter

# Leave the client a moment to receive our answer before its own deadline fires.
_CLIENT_MARGIN_SECONDS = 0.05


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    """A call abandoned at its bound ends later, cancelled or not: nobody waits for its outcome."""
    if not task.cancelled():
        task.exception()


class DeadlineInterceptor(HandlerRewriter):
    def __init__(self, bound_seconds: float) -> None:
        super().__init__()
        self._bound = bound_seconds

    def rewrite(self, handler: AnyHandler, method: str) -> AnyHandler:
        if not handler.unary_unary:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._bound_behaviour(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )

    def _bound_behaviour(self, inner: Callable[..., Awaitable[Any]]) -> Callable[[Any, AnyContext], Awaitable[Any]]:
        server_bound = self._bound

        async def behaviour(request: Any, context: AnyContext) -> Any:
            remaining = context.time_remaining()
            callers = remaining is not None and remaining - _CLIENT_MARGIN_SECONDS < server_bound
            bound = max(remaining - _CLIENT_MARGIN_SECONDS, 0.0) if callers and remaining is not None else server_bound
            # The call runs as a task of its own so that the answer does not wait for its
            # cleanup: cancelling a query on a frozen PostgreSQL makes psycopg wait seconds
            # more for the cancel request, and the client would pay for that too.
            call = asyncio.ensure_future(inner(request, context))
            try:
                done, _ = await asyncio.wait((call,), timeout=bound)
            except asyncio.CancelledError:
                call.cancel()
                raise
            if done:
                return call.result()
            call.cancel()
            call.add_done_callback(_consume_outcome)
            if callers:
                raise DeadlineExceeded("the call did not finish within its deadline")
            raise Unavailable(
                f"the server could not finish within {server_bound:g} s (a dependency is slow "
                "or unreachable); retry shortly",
                retry_after=timedelta(seconds=1),
            )

        return behaviour
