"""Custom-bot rules: upload, versions, reads, review, and the platform's review verdicts.

Never sees protobuf types. Raises typed ApiErrors carrying their ErrorReason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import Actor, AuditTrail
from the0.server.custom_bots.archive import DEFAULT_LIMITS, ArchiveInvalid, ArchiveLimits, check_archive
from the0.server.custom_bots.lifecycle import (
    APPROVED,
    AWAITING_HUMAN_REVIEW,
    CUSTOM_BOT_LIFECYCLE,
    DECLINED,
    PENDING_REVIEW,
)
from the0.server.custom_bots.manifest import NAME_PATTERN, CheckedManifest, ManifestInvalid
from the0.server.custom_bots.models import CustomBotRow
from the0.server.custom_bots.repository import CustomBotRepository, ReviewQueue
from the0.server.custom_bots.semver import SemVer
from the0.server.db.repository import get_any_for_update
from the0.server.errors import (
    AlreadyExists,
    ApiError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from the0.server.events.consumer import DropEvent, EventConsumers
from the0.server.events.envelope import Envelope
from the0.server.events.outbox import Outbox
from the0.server.events.watch_hub import Heartbeat, Snapshot, WatchHub
from the0.server.pagination import Cursor, PageTokens, page_size
from the0.server.quotas import enforce_quota
from the0.server.storage.object_store import ObjectNotFound, ObjectStore, ObjectStoreError

log = logging.getLogger("the0.custom_bots")

BUCKET = "custom-bots"
WATCH_KIND = "custom-bot"
MAX_REASONS, MAX_REASON_CHARS = 50, 1000

SUBMITTED = "custom-bot.submitted"
VERDICT_EVENTS = (
    "custom-bot.approved",
    "custom-bot.declined",
    "custom-bot.awaiting-human-review",
    "custom-bot.analysis-failed",
)


@dataclass(frozen=True, slots=True)
class CustomBot:
    """One uploaded version, as the servicer sees it (rows stay inside the domain)."""

    id: str
    owner_id: str
    name: str
    version: str
    state: str
    manifest: dict[str, Any]
    readme: str
    bot_schema: dict[str, Any] | None
    backtest_schema: dict[str, Any] | None
    object_key: str
    size_bytes: int
    sha256: str
    review_score: int | None
    review_reasons: list[str] | None
    reviewer: str | None
    review_time: datetime | None
    etag: str
    create_time: datetime
    update_time: datetime

    @classmethod
    def from_row(cls, row: CustomBotRow) -> CustomBot:
        return cls(
            id=row.id,
            owner_id=row.owner_id,
            name=row.name,
            version=row.version,
            state=row.state,
            manifest=dict(row.manifest),
            readme=row.readme,
            bot_schema=dict(row.bot_schema) if row.bot_schema is not None else None,
            backtest_schema=dict(row.backtest_schema) if row.backtest_schema is not None else None,
            object_key=row.object_key,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            review_score=row.review_score,
            review_reasons=list(row.review_reasons) if row.review_reasons is not None else None,
            reviewer=row.reviewer,
            review_time=row.review_time,
            etag=row.etag,
            create_time=row.created_at,
            update_time=row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[CustomBot]
    next_page_token: str


def _new_etag() -> str:
    return uuid.uuid4().hex[:16]


def _mb(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MB"


class SpoolBudget:
    """Upload bytes on this replica's disk at once, every caller together.

    Taken chunk by chunk as they arrive and given back when the spool file is removed, so
    many uploads at once cost at most ``limit`` bytes of disk (40 parallel 8 MiB uploads
    spooled 317 MB before there was a limit). Over it the upload is refused with
    SERVER_BUSY and a RetryInfo: the space frees as soon as other uploads finish.
    """

    RETRY_AFTER = timedelta(seconds=5)

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise ResourceExhausted(
                "the server is receiving as many uploads as it can hold; retry shortly",
                reason="SERVER_BUSY", metadata={"limit": str(self.limit)}, retry_after=self.RETRY_AFTER,
            )
        self.used += size

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)


class CustomBotService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        object_store: ObjectStore,
        outbox: Outbox,
        watch_hub: WatchHub,
        page_tokens: PageTokens,
        max_upload_bytes: int,
        spool_dir: Path,
        limits: ArchiveLimits = DEFAULT_LIMITS,
        upload_idle_seconds: float = 60.0,
        spool_budget: SpoolBudget | None = None,
        max_versions_per_user: int = 500,
        audit: AuditTrail | None = None,
    ) -> None:
        self._audit = audit or AuditTrail(())
        self._sessions = sessions
        self._store = object_store
        self._outbox = outbox
        self._hub = watch_hub
        self._page_tokens = page_tokens
        self.max_upload_bytes = max_upload_bytes
        self._spool_dir = spool_dir
        self._limits = limits
        self._idle_seconds = upload_idle_seconds
        self.spool_budget = spool_budget or SpoolBudget(256 * 1024 * 1024)
        self._max_versions = max_versions_per_user

    async def prepare(self) -> None:
        """At start-up: the bucket exists (best effort: a store that is down is retried per upload)."""
        try:
            await self._store.ensure_bucket(BUCKET)
        except ObjectStoreError as error:
            log.warning("cannot create the custom-bots bucket yet", extra={"error": str(error)})

    def register_consumers(self, consumers: EventConsumers) -> None:
        for event_type in VERDICT_EVENTS:
            consumers.register(event_type, self.apply_verdict)

    # -- upload --------------------------------------------------------------

    async def upload(self, owner_id: str, chunks: AsyncIterable[bytes]) -> CustomBot:
        """Spool, check, store once, then record the version and its event in one transaction."""
        path, size, sha256 = await self._spool(chunks)
        try:
            checked = await self._check(path, size)
            manifest = checked.manifest
            async with self._sessions() as session:
                await self._check_version(CustomBotRepository(session, owner_id), manifest.name, manifest.version)
            key = f"{owner_id}/{manifest.name}/{manifest.version}/{sha256}.zip"
            await self._store_once(key, path)
            return CustomBot.from_row(await self._record(owner_id, checked, key, size, sha256))
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, path)
            self.spool_budget.give_back(size)

    async def _spool(self, chunks: AsyncIterable[bytes]) -> tuple[Path, int, str]:
        """Write the chunks to a temp file, one chunk in memory at a time, hashing and counting.

        Each chunk must arrive within the idle timeout: a client that stops sending is
        dropped with its file, instead of holding a descriptor and disk for ever.
        """
        await asyncio.to_thread(self._spool_dir.mkdir, parents=True, exist_ok=True)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, suffix=".zip", dir=self._spool_dir)
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        incoming = aiter(chunks)
        try:
            with os.fdopen(fd, "wb") as file:
                while (chunk := await self._next_chunk(incoming)) is not None:
                    self.spool_budget.take(len(chunk))
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise ResourceExhausted(
                            f"the archive is larger than the upload limit of {_mb(self.max_upload_bytes)}",
                            reason="TOO_LARGE",
                            metadata={"limit": str(self.max_upload_bytes)},
                        )
                    if chunk:
                        await asyncio.to_thread(_write, file, digest, chunk)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.spool_budget.give_back(size)
            raise
        return path, size, digest.hexdigest()

    async def _next_chunk(self, incoming: AsyncIterator[bytes]) -> bytes | None:
        try:
            async with asyncio.timeout(self._idle_seconds):
                return await anext(incoming)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise DeadlineExceeded(
                f"the upload sent nothing for {self._idle_seconds:g} s and was abandoned",
                reason="UPLOAD_IDLE", metadata={"idleSeconds": f"{self._idle_seconds:g}"},
            ) from None

    async def _check(self, path: Path, size: int) -> CheckedManifest:
        try:
            if size == 0:
                raise ArchiveInvalid([FieldViolation("archive", "is empty")])
            return await asyncio.to_thread(check_archive, path, self._limits)
        except ArchiveInvalid as error:
            raise _invalid("the archive is invalid", "ARCHIVE_INVALID", error.violations) from None
        except ManifestInvalid as error:
            raise _invalid("bot-config.yaml is invalid", "MANIFEST_INVALID", error.violations) from None

    @staticmethod
    async def _check_version(repository: CustomBotRepository, name: str, version: str) -> CustomBotRow | None:
        """Return the current newest version (or None); raise if ``version`` may not follow it."""
        if await repository.has_version(name, version):
            raise AlreadyExists(
                f"{name} {version} already exists: versions are immutable, upload a greater version",
                metadata={"name": name, "version": version},
            )
        latest = await repository.latest_version_of(name)
        if latest is not None and not SemVer.parse(version) > SemVer.parse(latest.version):
            raise FailedPrecondition(
                f"version {version} of {name} must be greater than the newest version {latest.version}",
                reason="VERSION_NOT_INCREASING",
                metadata={"name": name, "version": version, "latestVersion": latest.version},
            )
        return latest

    async def _store_once(self, key: str, path: Path) -> None:
        """Objects are immutable: an existing key (same owner, name, version and bytes) is kept."""
        try:
            if await self._store.stat(BUCKET, key) is None:
                try:
                    await self._store.put_file(BUCKET, key, path, "application/zip")
                except ObjectNotFound:  # the bucket vanished or was never made
                    await self._store.ensure_bucket(BUCKET)
                    await self._store.put_file(BUCKET, key, path, "application/zip")
        except ObjectStoreError as error:
            log.warning("object store unavailable", extra={"error": str(error)})
            raise Unavailable("the archive store is unavailable; try again later") from None

    async def _record(
        self, owner_id: str, checked: CheckedManifest, key: str, size: int, sha256: str
    ) -> CustomBotRow:
        manifest = checked.manifest
        now = datetime.now(UTC)
        row = CustomBotRow(
            id=str(uuid.uuid4()),
            owner_id=owner_id,
            name=manifest.name,
            version=manifest.version,
            state=PENDING_REVIEW,
            manifest=manifest.to_json(),
            readme=checked.readme_text,
            bot_schema=checked.bot_schema,
            backtest_schema=checked.backtest_schema,
            object_key=key,
            size_bytes=size,
            sha256=sha256,
            etag=_new_etag(),
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions() as session, session.begin():
                repository = CustomBotRepository(session, owner_id)
                previous = await self._check_version(repository, manifest.name, manifest.version)
                await repository.add_version(row, previous)
                await enforce_quota(
                    session, CustomBotRow, owner_id, limit=self._max_versions, resource="customBotVersions",
                    what="custom-bot versions",
                )
                self._outbox.add(
                    session,
                    SUBMITTED,
                    {
                        "id": row.id,
                        "owner": owner_id,
                        "name": row.name,
                        "version": row.version,
                        "objectKey": key,
                        "size": size,
                        "sha256": sha256,
                        "manifest": row.manifest,
                    },
                )
        except IntegrityError:
            # A concurrent upload of the same name won: say why, from what is committed now.
            async with self._sessions() as session:
                await self._check_version(CustomBotRepository(session, owner_id), manifest.name, manifest.version)
            raise AlreadyExists(
                f"{manifest.name} {manifest.version} conflicts with a concurrent upload; try again",
                metadata={"name": manifest.name, "version": manifest.version},
            ) from None
        log.info("custom bot uploaded",
                 extra={"custom_bot_id": row.id, "custom_bot_name": row.name, "version": row.version})
        return row

    # -- reads ---------------------------------------------------------------

    async def get(self, owner_id: str, custom_bot_id: str) -> CustomBot:
        async with self._sessions() as session:
            row = await CustomBotRepository(session, owner_id).get(custom_bot_id)
        if row is None:
            raise _not_found(custom_bot_id)
        return CustomBot.from_row(row)

    async def list_versions(self, owner_id: str, *, requested_page_size: int, page_token: str, name: str) -> Page:
        size = page_size(requested_page_size)
        if name and not NAME_PATTERN.match(name):
            raise InvalidArgument(
                "name must be a custom bot name",
                violations=[FieldViolation("name", "must be 3 to 50 characters of a-z, 0-9 and '-'")],
            )
        scope = f"custom-bots:{owner_id}:{name}"
        cursor = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as session:
            rows = await CustomBotRepository(session, owner_id).list_page(name=name or None, after=cursor,
                                                                          limit=size + 1)
        rows, next_token = self._page_tokens.page(
            rows, size, scope=scope, cursor=lambda row: Cursor(row.created_at, row.id)
        )
        return Page(items=[CustomBot.from_row(row) for row in rows], next_page_token=next_token)

    async def open_archive(self, owner_id: str, custom_bot_id: str) -> AsyncGenerator[bytes, None]:
        """The stored zip in chunks (raises NOT_FOUND / UNAVAILABLE before the first byte)."""
        row = await self.get(owner_id, custom_bot_id)
        try:
            return await self._store.open_stream(BUCKET, row.object_key)
        except ObjectNotFound:
            log.error("archive missing from the store", extra={"custom_bot_id": row.id, "key": row.object_key})
            raise Unavailable("the archive is not available right now") from None
        except ObjectStoreError:
            raise Unavailable("the archive store is unavailable; try again later") from None

    async def watch(self, owner_id: str, custom_bot_id: str) -> AsyncGenerator[CustomBot | Heartbeat, None]:
        async def load() -> Snapshot[CustomBot]:
            custom_bot = await self.get(owner_id, custom_bot_id)
            return Snapshot(custom_bot, custom_bot.etag, CUSTOM_BOT_LIFECYCLE.is_terminal(custom_bot.state))

        async for item in self._hub.watch(WATCH_KIND, custom_bot_id, load):
            yield item

    # -- review --------------------------------------------------------------

    async def erase_account(self, session: AsyncSession, owner_id: str) -> dict[str, int]:
        """Account deletion, inside its transaction: every custom-bot version of the owner is deleted
        (versions are private to their owner, so no one else's bot can use them)."""
        deleted = await session.execute(
            delete(CustomBotRow).where(CustomBotRow.owner_id == owner_id).returning(CustomBotRow.id))
        return {"customBotsDeleted": len(deleted.all())}

    async def review_queue(self, *, is_admin: bool, requested_page_size: int, page_token: str) -> Page:
        """Every owner's versions AWAITING_HUMAN_REVIEW, the longest waiting first."""
        if not is_admin:
            raise PermissionDenied("only an admin may see the review queue")
        size = page_size(requested_page_size)
        scope = "custom-bots:review-queue"
        cursor = self._page_tokens.decode(page_token, scope=scope)
        async with self._sessions() as session:
            rows = await ReviewQueue(session).page(after=cursor, limit=size + 1)
        rows, next_token = self._page_tokens.page(
            rows, size, scope=scope, cursor=lambda row: Cursor(row.created_at, row.id)
        )
        return Page(items=[CustomBot.from_row(row) for row in rows], next_page_token=next_token)

    async def review(
        self, *, actor_id: str, is_admin: bool, custom_bot_id: str, approve: bool | None, reasons: list[str]
    ) -> CustomBot:
        """An admin's decision on a version AWAITING_HUMAN_REVIEW."""
        if not is_admin:
            raise PermissionDenied("only an admin may review custom bots")
        problems = []
        if not custom_bot_id:
            problems.append(FieldViolation("id", "is required"))
        if approve is None:
            problems.append(FieldViolation("decision", "must be REVIEW_DECISION_APPROVE or REVIEW_DECISION_DECLINE"))
        if approve is False and not any(r.strip() for r in reasons):
            problems.append(FieldViolation("reasons", "at least one reason is required to decline"))
        problems.extend(_reason_problems(reasons))
        if problems:
            raise InvalidArgument("the review is invalid", violations=problems)
        async with self._sessions() as session, session.begin():
            row = await get_any_for_update(session, CustomBotRow, custom_bot_id)
            if row is None:
                raise _not_found(custom_bot_id)
            if not CUSTOM_BOT_LIFECYCLE.allows("review", row.state):
                raise FailedPrecondition(
                    f"only a version awaiting human review can be reviewed; this one is {row.state}",
                    reason="INVALID_STATE",
                    metadata={"state": row.state},
                )
            self._apply(session, row, "review", APPROVED if approve else DECLINED,
                        score=row.review_score, reasons=[r for r in reasons if r.strip()], reviewer=actor_id)
            # An admin's session (AUTH_POLICY_ADMIN): the reasons are the owner's to read on the bot.
            self._audit.record(session, "custom-bot.reviewed", actor=Actor.user(actor_id, "session"),
                               subject_user_id=row.owner_id,
                               details={"customBotId": row.id, "name": row.name, "version": row.version,
                                        "decision": "approve" if approve else "decline"})
        return CustomBot.from_row(row)

    def _apply(
        self, session: AsyncSession, row: CustomBotRow, action: str, state: str, *,
        score: int | None, reasons: list[str] | None, reviewer: str | None,
    ) -> None:
        now = datetime.now(UTC)
        row.state = CUSTOM_BOT_LIFECYCLE.target(action, row.state, state)
        row.review_score = score
        row.review_reasons = reasons or []
        row.reviewer = reviewer
        row.review_time = now
        row.updated_at = now
        row.etag = _new_etag()
        self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)

    async def apply_verdict(self, session: AsyncSession, envelope: Envelope) -> None:
        """Handler of the analyzer's custom-bot.* verdicts (inside the consumer's transaction)."""
        data = envelope.data
        custom_bot_id = data.get("customBotId")
        if not isinstance(custom_bot_id, str) or not custom_bot_id:
            raise DropEvent("customBotId is missing")
        score = data.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise DropEvent("score must be a number")
        reasons = data.get("reasons")
        if reasons is None:
            reasons = []
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise DropEvent("reasons must be a list of strings")
        reasons = [r[:MAX_REASON_CHARS] for r in reasons[:MAX_REASONS]]
        reviewer = data.get("reviewer")
        reviewer = reviewer[:100] if isinstance(reviewer, str) and reviewer else "security-analyzer"
        target = {
            "custom-bot.approved": APPROVED,
            "custom-bot.declined": DECLINED,
            "custom-bot.awaiting-human-review": AWAITING_HUMAN_REVIEW,
            "custom-bot.analysis-failed": AWAITING_HUMAN_REVIEW,
        }[envelope.type]
        if envelope.type == "custom-bot.declined" and not reasons:
            raise DropEvent("a decline needs reasons")
        if envelope.type == "custom-bot.analysis-failed":
            error = data.get("error")
            if not isinstance(error, str) or not error:
                raise DropEvent("error is missing")
            reasons = [f"analysis failed: {error[:MAX_REASON_CHARS]}"]
        row = await get_any_for_update(session, CustomBotRow, custom_bot_id)
        if row is None:
            raise DropEvent(f"no custom bot {custom_bot_id}")
        if not CUSTOM_BOT_LIFECYCLE.allows("verdict", row.state):
            raise DropEvent(f"custom bot {custom_bot_id} is {row.state}, not {PENDING_REVIEW}")
        self._apply(session, row, "verdict", target, score=None if score is None else max(0, min(100, int(score))),
                    reasons=reasons, reviewer=reviewer)


def _write(file: BinaryIO, digest: Any, chunk: bytes) -> None:
    digest.update(chunk)
    file.write(chunk)


def _invalid(title: str, reason: str, violations: Sequence[FieldViolation]) -> ApiError:
    first = violations[0]
    more = f" (and {len(violations) - 1} more problems)" if len(violations) > 1 else ""
    return InvalidArgument(f"{title}: {first.field} {first.description}{more}", reason=reason,
                           violations=violations)


def _not_found(custom_bot_id: str) -> NotFound:
    return NotFound(f"custom bot {custom_bot_id} not found", metadata={"id": custom_bot_id})


def _reason_problems(reasons: list[str]) -> list[FieldViolation]:
    problems = []
    if len(reasons) > MAX_REASONS:
        problems.append(FieldViolation("reasons", f"at most {MAX_REASONS} reasons, got {len(reasons)}"))
    if any(len(r) > MAX_REASON_CHARS for r in reasons):
        problems.append(FieldViolation("reasons", f"each reason at most {MAX_REASON_CHARS} characters"))
    return problems
