"""Backtest rules: validation, the lifecycle, request ids, events, results and watching.

Never sees protobuf types. Every write is one transaction that also stages its
events in the outbox and announces the change to watchers after commit.

The lifecycle is the table in lifecycle.py, shared with the runtime events
applied in events.py.

Results: the runtime writes ``<id>/analysis.json`` and ``<id>/logs.txt`` to
bucket ``backtests``; this service only reads them. analysis.json is served
only once it is known to be JSON (a half-written file must be a clear error,
not a truncated 200): each version of it is parsed once, on its first download,
and the verdict is kept on the backtest row; later downloads of that version, on
any replica, stream it straight from the store (``open_results``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from the0.server.backtests.config import validate_backtest_config
from the0.server.backtests.lifecycle import BACKTEST_LIFECYCLE
from the0.server.backtests.models import ANALYSIS_VERSION_CHARS, BacktestRequestRow, BacktestRow
from the0.server.backtests.repository import BacktestRepository
from the0.server.custom_bots.catalog import CustomBotCatalog, CustomBotVersion
from the0.server.db.pages import OwnedReads
from the0.server.db.sessions import autocommit_sessions
from the0.server.errors import (
    Aborted,
    DataLoss,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from the0.server.events.outbox import Outbox
from the0.server.events.watch_hub import Heartbeat, Snapshot, WatchHub
from the0.server.pagination import Cursor, PageTokens
from the0.server.quotas import enforce_quota
from the0.server.storage.object_store import (
    DEFAULT_CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    OpenObject,
)
from the0.server.validation import check_display_name, check_request_id

log = logging.getLogger("the0.backtests")

WATCH_KIND = "backtest"
BUCKET = "backtests"
ANALYSIS_FILE = "analysis.json"
LOGS_FILE = "logs.txt"
# A version of analysis.json not yet checked is read whole to parse it before a byte is sent.
MAX_ANALYSIS_BYTES = 50 * 1024 * 1024


def results_prefix(backtest_id: str) -> str:
    return f"{backtest_id}/"


def analysis_key(backtest_id: str) -> str:
    return results_prefix(backtest_id) + ANALYSIS_FILE


def logs_key(backtest_id: str) -> str:
    return results_prefix(backtest_id) + LOGS_FILE


@dataclass(frozen=True, slots=True)
class Backtest:
    id: str
    owner_id: str
    name: str
    config: dict[str, Any]
    state: str
    custom_bot_id: str
    summary: dict[str, Any] | None
    error: str | None
    etag: str
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    end_time: datetime | None

    @property
    def terminal(self) -> bool:
        return BACKTEST_LIFECYCLE.is_terminal(self.state)

    @classmethod
    def from_row(cls, row: BacktestRow) -> Backtest:
        return cls(
            id=row.id,
            owner_id=row.owner_id,
            name=row.name,
            config=dict(row.config),
            state=row.state,
            custom_bot_id=row.custom_bot_id,
            summary=dict(row.summary) if row.summary is not None else None,
            error=row.error,
            etag=row.etag,
            create_time=row.create_time,
            update_time=row.update_time,
            start_time=row.start_time,
            end_time=row.end_time,
        )


@dataclass(frozen=True, slots=True)
class BacktestPage:
    backtests: list[Backtest]
    next_page_token: str


def created_event_data(row: BacktestRow, custom_bot: CustomBotVersion) -> dict[str, Any]:
    """Everything the runtime needs to run the backtest without calling back."""
    return {
        "backtestId": row.id,
        "ownerId": row.owner_id,
        "name": row.name,
        "config": dict(row.config),
        "customBot": custom_bot.runtime_data(),
        "runtime": custom_bot.runtime,
        "entrypoint": custom_bot.entrypoints.get("backtest", ""),
        "archive": {"bucket": custom_bot.bucket, "objectKey": custom_bot.object_key},
        "results": {
            "bucket": BUCKET,
            "prefix": results_prefix(row.id),
            "analysisKey": analysis_key(row.id),
            "logsKey": logs_key(row.id),
        },
    }


def _now() -> datetime:
    return datetime.now(UTC)


def not_found(backtest_id: str) -> NotFound:
    return NotFound(f"backtest {backtest_id!r} not found", metadata={"id": backtest_id})


def invalid_state(backtest_id: str, state: str, action: str, allowed: tuple[str, ...]) -> FailedPrecondition:
    return FailedPrecondition(
        f"cannot {action} a backtest in state {state}; allowed in {', '.join(allowed)}",
        reason="INVALID_STATE",
        metadata={"id": backtest_id, "state": state},
    )


def _results_missing(backtest_id: str, what: str) -> NotFound:
    return NotFound(
        f"the backtest's {what} is not available",
        reason="RESULTS_UNAVAILABLE",
        metadata={"id": backtest_id, "object": what},
    )


def _store_unavailable(error: ObjectStoreError) -> Unavailable:
    return Unavailable("the object store is unavailable, try again later", metadata={"store": type(error).__name__})


def _not_json(backtest_id: str) -> DataLoss:
    return DataLoss(
        f"the backtest's {ANALYSIS_FILE} is not valid JSON",
        reason="RESULTS_UNAVAILABLE",
        metadata={"id": backtest_id, "object": ANALYSIS_FILE},
    )


def _too_large(backtest_id: str) -> DataLoss:
    return DataLoss(
        f"the backtest's {ANALYSIS_FILE} is larger than {MAX_ANALYSIS_BYTES // (1024 * 1024)} MB",
        reason="RESULTS_UNAVAILABLE",
        metadata={"id": backtest_id, "object": ANALYSIS_FILE, "maxBytes": str(MAX_ANALYSIS_BYTES)},
    )


def _not_as_checked(backtest_id: str) -> DataLoss:
    return DataLoss(
        f"the backtest's {ANALYSIS_FILE} did not arrive whole from the object store; try again",
        reason="RESULTS_UNAVAILABLE",
        metadata={"id": backtest_id, "object": ANALYSIS_FILE},
    )


@dataclass(frozen=True, slots=True)
class AnalysisVerdict:
    """What the check of one version of analysis.json found (kept on the backtest row)."""

    size: int
    version: str
    valid: bool

    @classmethod
    def of_row(cls, row: BacktestRow) -> AnalysisVerdict | None:
        if row.analysis_size is None or not row.analysis_version or row.analysis_valid is None:
            return None
        return cls(row.analysis_size, row.analysis_version, row.analysis_valid)

    def describes(self, info: ObjectInfo) -> bool:
        """The object being read is the very one checked: the store says so, with these bytes."""
        return bool(info.version) and (info.size, info.version) == (self.size, self.version)


async def _read_whole(opened: OpenObject, backtest_id: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    async with contextlib.aclosing(opened):
        async for chunk in opened.chunks:
            size += len(chunk)
            if size > MAX_ANALYSIS_BYTES:
                raise _too_large(backtest_id)
            parts.append(chunk)
    return b"".join(parts)


async def _memory_chunks(data: bytes, chunk_size: int) -> AsyncGenerator[bytes, None]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


async def _exactly(opened: OpenObject, size: int, backtest_id: str) -> AsyncGenerator[bytes, None]:
    """The store's chunks as they arrive, ending in DataLoss (never a clean end) unless they are
    exactly the ``size`` bytes that were checked."""
    sent = 0
    try:
        async with contextlib.aclosing(opened):
            async for chunk in opened.chunks:
                sent += len(chunk)
                if sent > size:
                    raise _not_as_checked(backtest_id)
                yield chunk
    except ObjectStoreError as error:
        raise _store_unavailable(error) from error
    if sent != size:
        raise _not_as_checked(backtest_id)


class BacktestService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        watch_hub: WatchHub,
        catalog: CustomBotCatalog,
        page_tokens: PageTokens,
        object_store: ObjectStore,
        max_active_backtests_per_user: int = 10,
    ) -> None:
        self._sessions = sessions
        self._max_active = max_active_backtests_per_user
        self._read_sessions = autocommit_sessions(sessions)
        self._reads = OwnedReads(
            self._read_sessions,
            page_tokens,
            repository=BacktestRepository,
            to_value=Backtest.from_row,
            cursor=lambda row: Cursor(row.create_time, row.id),
            list_scope="backtests.list",
        )
        self._outbox = outbox
        self._hub = watch_hub
        self._catalog = catalog
        self._store = object_store

    async def prepare(self) -> None:
        """At start-up: the results bucket exists (best effort: the runtime writes there, we only read)."""
        try:
            await self._store.ensure_bucket(BUCKET)
        except ObjectStoreError as error:
            log.warning("cannot create the backtests bucket yet", extra={"error": str(error)})

    # -- reads ---------------------------------------------------------------

    async def get(self, owner_id: str, backtest_id: str) -> Backtest:
        found = await self._reads.get(owner_id, backtest_id)
        if found is None:
            raise not_found(backtest_id)
        return found

    async def list(
        self, owner_id: str, *, state: str | None, requested_page_size: int, page_token: str
    ) -> BacktestPage:
        found, next_token = await self._reads.page(
            owner_id, state=state, requested_page_size=requested_page_size, page_token=page_token
        )
        return BacktestPage(found, next_token)

    # -- writes --------------------------------------------------------------

    async def create(
        self, owner_id: str, *, name: str, config: dict[str, Any], request_id: str = ""
    ) -> Backtest:
        name = check_display_name(name, field="backtest.name")
        request = check_request_id(request_id)
        if request is not None and (done := await self._served(owner_id, request)) is not None:
            return done
        try:
            async with self._sessions() as session, session.begin():
                backtests = BacktestRepository(session, owner_id)
                validated = await validate_backtest_config(session, self._catalog, owner_id, config)
                now = _now()
                row = BacktestRow(
                    id=str(uuid.uuid4()),
                    owner_id=owner_id,
                    name=name,
                    config=validated.config,
                    state="PENDING",
                    custom_bot_id=validated.custom_bot.id,
                    create_time=now,
                    update_time=now,
                )
                backtests.add(row)
                if request is not None:
                    backtests.remember_request(request, row.id)
                await session.flush()
                # Only unfinished runs count: they are what costs the runtime, and there is no
                # DeleteBacktest, so a cap on every backtest ever run would lock a user out for good.
                await enforce_quota(
                    session, BacktestRow, owner_id, limit=self._max_active, resource="activeBacktests",
                    what="active backtests",
                    conditions=(BacktestRow.state.not_in(BACKTEST_LIFECYCLE.terminal),),
                    hint="; wait for one to finish or cancel one",
                )
                self._outbox.add(session, "backtest.created", created_event_data(row, validated.custom_bot))
                self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)
        except IntegrityError:
            # The same request_id raced us and won: answer with its backtest.
            if request is not None and (done := await self._served(owner_id, request)) is not None:
                return done
            raise
        log.info("backtest created", extra={"backtest_id": row.id, "owner_id": owner_id})
        return Backtest.from_row(row)

    async def cancel(self, owner_id: str, backtest_id: str) -> Backtest:
        try:
            async with self._sessions() as session, session.begin():
                row = await BacktestRepository(session, owner_id).get(backtest_id, for_update=True)
                if row is None:
                    raise not_found(backtest_id)
                if not BACKTEST_LIFECYCLE.allows("cancel", row.state):
                    raise invalid_state(row.id, row.state, "cancel", BACKTEST_LIFECYCLE.sources("cancel"))
                now = _now()
                row.state = BACKTEST_LIFECYCLE.target("cancel", row.state, "CANCELLED")
                row.update_time = now
                row.end_time = now
                await session.flush()
                self._outbox.add(
                    session,
                    "backtest.cancel-requested",
                    {"backtestId": row.id, "ownerId": row.owner_id, "reason": "cancelled by owner"},
                )
                self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)
        except StaleDataError as error:
            # A runtime event changed it between our read and write: the caller can look and retry.
            raise Aborted(
                "the backtest changed while cancelling it: read it again and retry",
                reason="ETAG_MISMATCH",
                metadata={"id": backtest_id},
            ) from error
        log.info("backtest cancelled", extra={"backtest_id": backtest_id, "owner_id": owner_id})
        return Backtest.from_row(row)

    async def erase_account(self, session: AsyncSession, owner_id: str) -> dict[str, int]:
        """Account deletion, inside its transaction: a running backtest is cancelled as CancelBacktest
        does it (``backtest.cancel-requested``), then every backtest row of the owner is deleted. The
        result objects are left to the retention sweep (they are keyed by backtest id only)."""
        rows = list(await session.scalars(
            select(BacktestRow).where(BacktestRow.owner_id == owner_id).with_for_update()))
        for row in rows:
            if BACKTEST_LIFECYCLE.allows("cancel", row.state):
                self._outbox.add(session, "backtest.cancel-requested",
                                 {"backtestId": row.id, "ownerId": owner_id, "reason": "account deleted"})
            await session.delete(row)
            self._hub.notify_after_commit(session, WATCH_KIND, row.id, "deleted")
        await session.flush()
        await session.execute(delete(BacktestRequestRow).where(BacktestRequestRow.owner_id == owner_id))
        return {"backtestsDeleted": len(rows)}

    async def _served(self, owner_id: str, request_id: str) -> Backtest | None:
        """The backtest of an already served request id, or None if this id is new."""
        async with self._read_sessions() as session:
            backtests = BacktestRepository(session, owner_id)
            served = await backtests.served_request(request_id)
            if served is None:
                return None
            row = await backtests.get(served.backtest_id)
            if row is None:
                raise not_found(served.backtest_id)
            return Backtest.from_row(row)

    # -- results -------------------------------------------------------------

    async def open_results(
        self, owner_id: str, backtest_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The completed backtest's analysis.json, known to be JSON before any byte is returned.

        One read of the object per download. The kept verdict is compared with what the store says
        of the bytes being read (S3: the GET's response headers): the checked version is streamed
        as it arrives, a corrupt one is DATA_LOSS at once, and any other is read whole and parsed
        first (its verdict kept for the next download).
        """
        verdict = await self._completed_analysis_verdict(owner_id, backtest_id)
        try:
            opened = await self._store.open_object(BUCKET, analysis_key(backtest_id), chunk_size)
        except ObjectNotFound as error:
            raise _results_missing(backtest_id, ANALYSIS_FILE) from error
        except ObjectStoreError as error:
            raise _store_unavailable(error) from error
        info = opened.info
        if verdict is not None and verdict.describes(info):
            if verdict.valid:
                return _exactly(opened, info.size, backtest_id)
            await opened.aclose()
            raise _not_json(backtest_id)
        if info.size > MAX_ANALYSIS_BYTES:
            await opened.aclose()
            raise _too_large(backtest_id)
        try:
            data = await _read_whole(opened, backtest_id)
        except ObjectStoreError as error:
            raise _store_unavailable(error) from error
        valid = await asyncio.to_thread(_is_json, data)
        if info.version and len(data) == info.size:
            await self._keep_analysis_verdict(owner_id, backtest_id, AnalysisVerdict(info.size, info.version, valid))
        if not valid:
            raise _not_json(backtest_id)
        return _memory_chunks(data, chunk_size)

    async def open_logs(
        self, owner_id: str, backtest_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """The run's logs.txt as far as the runtime wrote it, in any state, streamed from the store."""
        await self.get(owner_id, backtest_id)
        try:
            return await self._store.open_stream(BUCKET, logs_key(backtest_id), chunk_size)
        except ObjectNotFound as error:
            raise _results_missing(backtest_id, LOGS_FILE) from error
        except ObjectStoreError as error:
            raise _store_unavailable(error) from error

    async def _completed_analysis_verdict(self, owner_id: str, backtest_id: str) -> AnalysisVerdict | None:
        async with self._read_sessions() as session:
            row = await BacktestRepository(session, owner_id).get(backtest_id)
            if row is None:
                raise not_found(backtest_id)
            if row.state != "COMPLETED":
                raise invalid_state(backtest_id, row.state, "read the results of", ("COMPLETED",))
            return AnalysisVerdict.of_row(row)

    async def _keep_analysis_verdict(self, owner_id: str, backtest_id: str, verdict: AnalysisVerdict) -> None:
        """Best effort: without it the next download parses the object again, nothing worse."""
        if len(verdict.version) > ANALYSIS_VERSION_CHARS:  # no store we know of, but not worth an error
            return
        try:
            async with self._sessions() as session, session.begin():
                await BacktestRepository(session, owner_id).record_analysis_verdict(
                    backtest_id, size=verdict.size, version=verdict.version, valid=verdict.valid
                )
        except SQLAlchemyError as error:
            log.warning(
                "cannot keep the verdict on the backtest's analysis.json",
                extra={"backtest_id": backtest_id, "error": type(error).__name__},
            )

    # -- watching ------------------------------------------------------------

    async def watch(self, owner_id: str, backtest_id: str) -> AsyncGenerator[Backtest | Heartbeat, None]:
        """Current backtest, then each change, heartbeats; ends at a terminal state. NotFound if not the caller's."""

        async def load() -> Snapshot[Backtest]:
            backtest = await self.get(owner_id, backtest_id)
            return Snapshot(backtest, etag=backtest.etag, terminal=backtest.terminal)

        async for item in self._hub.watch(WATCH_KIND, backtest_id, load):
            yield item


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
