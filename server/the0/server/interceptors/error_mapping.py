"""Turns exceptions into gRPC statuses with google.rpc details.

``ApiError`` becomes its status (ErrorInfo, BadRequest, RetryInfo) as
``grpc-status-details-bin``; anything else is a bug: INTERNAL with a generic
message naming the request id, traceback only in the server log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import grpc.aio

from the0.server.dependency_faults import dependency_fault
from the0.server.errors import ApiError, Internal, Unimplemented
from the0.server.interceptors.wrapping import AnyContext, WrappingInterceptor
from the0.server.request_context import current_request_id

log = logging.getLogger("the0.errors")


class ErrorMappingInterceptor(WrappingInterceptor):
    @asynccontextmanager
    async def around(self, method: str, context: AnyContext) -> AsyncIterator[None]:
        try:
            yield
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except ApiError as error:
            log.info("rpc error", extra={"method": method, "reason": error.reason, "error": error.message})
            await _abort(context, error)
        except NotImplementedError:
            await _abort(context, Unimplemented(f"{method} is not implemented", metadata={"method": method}))
        except Exception as error:
            fault = dependency_fault(error)
            if fault is not None:
                # Not a bug and not the client's: an outage, logged once per call without a traceback.
                log.warning(
                    "dependency unavailable",
                    extra={"method": method, "dependency": fault.metadata["dependency"], "error_type": type(error).__name__},
                )
                await _abort(context, fault)
                return
            log.exception("unhandled exception", extra={"method": method})
            await _abort(
                context,
                Internal(
                    f"internal error; quote request id {current_request_id()} when reporting it",
                    metadata={"requestId": current_request_id()},
                ),
            )


async def _abort(context: AnyContext, error: ApiError) -> None:
    status = error.to_status()
    # abort() replaces the trailers: keep the request id the logging interceptor set.
    trailers = (*status.trailing_metadata, ("x-request-id", current_request_id()))
    await context.abort(status.code, status.details, trailing_metadata=trailers)
