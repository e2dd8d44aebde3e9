"""Dependency faults are retryable, not bugs: which exceptions mean "try again shortly".

A database that is down, restarting or too slow, a connection pool that stays full, an
object store or NATS that does not answer: the client's request was fine and a retry
after a short pause may well succeed, so the answer is UNAVAILABLE with a RetryInfo
(HTTP 503 through Envoy), never INTERNAL. Everything not listed here stays a bug.
"""

from __future__ import annotations

from datetime import timedelta

import nats.errors
from sqlalchemy import exc as sa_exc

from the0.server.errors import ApiError, Unavailable
from the0.server.events.nats_connection import NatsUnavailable
from the0.server.storage.object_store import ObjectNotFound, ObjectStoreError, ObjectTooLarge

RETRY_AFTER = timedelta(seconds=1)

# psycopg / aiosqlite errors arrive wrapped by SQLAlchemy. OperationalError covers a
# refused or dropped connection, "the database system is shutting down / starting up",
# and statement_timeout's query_canceled; InterfaceError a connection already closed.
_DATABASE_FAULTS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection became free within pool_timeout
)
_NATS_FAULTS: tuple[type[BaseException], ...] = (
    NatsUnavailable,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.TimeoutError,
)


def dependency_fault(error: BaseException) -> ApiError | None:
    """The retryable ApiError for ``error`` if a dependency caused it, else None."""
    if isinstance(error, _DATABASE_FAULTS) or (
        isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
    ):
        return _unavailable("the database is unavailable; retry shortly", "database")
    if isinstance(error, ObjectStoreError) and not isinstance(error, ObjectNotFound | ObjectTooLarge):
        return _unavailable("the object store is unavailable; retry shortly", "objectStore")
    if isinstance(error, _NATS_FAULTS):
        return _unavailable("the event bus is unavailable; retry shortly", "nats")
    return None


def _unavailable(message: str, dependency: str) -> Unavailable:
    return Unavailable(message, metadata={"dependency": dependency}, retry_after=RETRY_AFTER)
