"""Async SQLAlchemy engines for PostgreSQL (psycopg 3) and SQLite (aiosqlite).

Settings hands us a normalised URL: ``postgresql+psycopg://...`` or
``sqlite:///abs/path``. Nothing here connects until first use.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# How long a SQLite writer waits for the lock before "database is locked".
_SQLITE_BUSY_TIMEOUT_MS = 5000


def _is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


def create_engine(database_url: str, *, statement_timeout_seconds: float | None = None) -> AsyncEngine:
    """An AsyncEngine for the normalised URL; SQLite gets WAL, foreign keys and a busy timeout.

    On PostgreSQL ``statement_timeout_seconds`` bounds every statement on the server (and
    how long a request waits for a pooled connection), so a slow query or a full pool
    turns into a retryable error instead of a call that hangs.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, json_deserializer=orjson.loads)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    pool_timeout = 10.0
    if statement_timeout_seconds is not None:
        milliseconds = max(int(statement_timeout_seconds * 1000), 1)
        # idle_in_transaction: a transaction left open by a cancelled request is not held forever.
        connect_args["options"] = (
            f"-c statement_timeout={milliseconds} -c idle_in_transaction_session_timeout={milliseconds * 3}"
        )
        pool_timeout = min(pool_timeout, statement_timeout_seconds)
        connect_args["connect_timeout"] = max(1, min(5, int(statement_timeout_seconds)))
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_recycle=1800,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
        # Every bot row holds JSON: orjson reads it several times faster than json.loads. Only
        # what this server wrote is read back, so the two parsers' edge cases (NaN) do not arise.
        json_deserializer=orjson.loads,
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection idle for longer than this is pinged before use. SQLAlchemy's pool_pre_ping
# pings on every checkout: a second round trip on every request (~30% of a GetBot's CPU). A busy
# connection was proven alive moments ago; one that sat idle may have been cut (PostgreSQL restart,
# idle-killing proxy). A dead busy one fails its statement once, which invalidates the whole pool,
# and the one-statement reads retry that once (db/pages.py).
PING_IDLE_SECONDS = 5.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:  # whatever failed, the connection is not usable
            raise exc.DisconnectionError(f"idle connection failed its ping: {type(error).__name__}") from error
        if not alive:
            raise exc.DisconnectionError("idle connection failed its ping")

    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "checkout", checked_out)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Per-connection pragmas: foreign keys are off by default in SQLite; WAL lets
    # readers run beside the single writer.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def sync_url(database_url: str) -> str:
    """The same database for a sync driver (Alembic): psycopg 3 sync or plain sqlite."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite")
    else:
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: rows stay readable after commit without lazy IO.
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, timeout: float = 2.0) -> None:
    """Run ``SELECT 1``; raise on failure or after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
