"""The custom-bot service on SQLite and PostgreSQL with a real S3 (moto): upload, versions,
reads, review, and the verdict handlers run through the durable-consumer logic."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.unit.test_archive_checks import bot_zip, make_zip
from the0.server.custom_bots.service import BUCKET, CustomBotService
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.models import UserRow
from the0.server.errors import ApiError
from the0.server.events.consumer import EventConsumers, Outcome
from the0.server.events.envelope import Envelope
from the0.server.events.models import OutboxRow
from the0.server.events.outbox import Outbox
from the0.server.events.watch_hub import WatchHub
from the0.server.pagination import PageTokens


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class Env:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], service: CustomBotService,
                 consumers: EventConsumers, store: Any, spool: Path) -> None:
        self.sessions, self.service, self.consumers, self.store, self.spool = (
            sessions, service, consumers, store, spool)

    async def verdict(self, event_type: str, data: dict[str, Any], event_id: str | None = None) -> Outcome:
        envelope = Envelope(type=event_type, data=data, id=event_id or str(uuid.uuid4()))
        return await self.consumers.handle(envelope.to_json(), event_type, self.service.apply_verdict)

    async def outbox_rows(self) -> list[OutboxRow]:
        async with self.sessions() as session:
            return list((await session.scalars(select(OutboxRow).order_by(OutboxRow.seq))).all())


async def add_user(sessions: async_sessionmaker[AsyncSession], role: str = "user") -> str:
    user_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(UserRow(id=user_id, email=f"{user_id}@example.com", username=user_id[:20], role=role,
                            password_hash="x", created_at=now, updated_at=now))
    return user_id


@pytest.fixture
async def env(database_url: str, minio_store: Any, tmp_path: Path) -> AsyncIterator[Env]:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    service = CustomBotService(
        sessions=sessions, object_store=minio_store, outbox=Outbox(), watch_hub=WatchHub(None),
        page_tokens=PageTokens(b"k" * 32), max_upload_bytes=10 * 1024 * 1024, spool_dir=tmp_path / "spool",
    )
    await service.prepare()
    try:
        yield Env(sessions, service, EventConsumers(sessions, lambda: None), minio_store, tmp_path / "spool")
    finally:
        await engine.dispose()


def assert_error(error: ApiError, code: grpc.StatusCode, reason: str) -> None:
    assert (error.code, error.reason) == (code, reason), error.message


async def test_upload_stores_once_and_records_the_event(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every log call really formats its record
    owner = await add_user(env.sessions)
    data = bot_zip()
    row = await env.service.upload(owner, chunks(data))
    sha = hashlib.sha256(data).hexdigest()
    assert (row.state, row.size_bytes, row.sha256) == ("PENDING_REVIEW", len(data), sha)
    assert row.object_key == f"{owner}/sma-crossover/1.0.0/{sha}.zip"
    assert await env.store.get_bytes(BUCKET, row.object_key, 10**7) == data
    (event,) = await env.outbox_rows()
    assert event.type == "custom-bot.submitted" and event.published_at is None
    assert event.data == {"id": row.id, "owner": owner, "name": "sma-crossover", "version": "1.0.0",
                          "objectKey": row.object_key, "size": len(data), "sha256": sha,
                          "manifest": row.manifest}
    assert list(env.spool.iterdir()) == []  # the temp file is gone


async def test_versions_must_increase_and_are_immutable(env: Env) -> None:
    owner = await add_user(env.sessions)
    first = await env.service.upload(owner, chunks(bot_zip(version="1.1.0")))
    original = await env.store.get_bytes(BUCKET, first.object_key, 10**7)

    with pytest.raises(ApiError) as caught:
        await env.service.upload(owner, chunks(bot_zip(version="1.0.9")))
    assert_error(caught.value, grpc.StatusCode.FAILED_PRECONDITION, "VERSION_NOT_INCREASING")
    assert caught.value.metadata["latestVersion"] == "1.1.0"

    changed = bot_zip(version="1.1.0", extra={"more.py": b"print('different bytes')\n"})
    with pytest.raises(ApiError) as caught:
        await env.service.upload(owner, chunks(changed))
    assert_error(caught.value, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    changed_key = f"{owner}/sma-crossover/1.1.0/{hashlib.sha256(changed).hexdigest()}.zip"
    assert await env.store.stat(BUCKET, changed_key) is None
    assert await env.store.get_bytes(BUCKET, first.object_key, 10**7) == original

    second = await env.service.upload(owner, chunks(bot_zip(version="1.2.0-rc.1")))
    third = await env.service.upload(owner, chunks(bot_zip(version="1.2.0")))
    page = await env.service.list_versions(owner, requested_page_size=0, page_token="", name="")
    assert [r.id for r in page.items] == [third.id]
    page = await env.service.list_versions(owner, requested_page_size=0, page_token="", name="sma-crossover")
    assert [r.version for r in page.items] == ["1.2.0", "1.2.0-rc.1", "1.1.0"]
    assert second.id in {r.id for r in page.items}
    assert len(await env.outbox_rows()) == 3


async def test_reads_are_scoped_to_the_owner(env: Env) -> None:
    alice, bob = await add_user(env.sessions), await add_user(env.sessions)
    row = await env.service.upload(alice, chunks(bot_zip()))
    # The same name and version for another owner is fine: names are per owner.
    await env.service.upload(bob, chunks(bot_zip()))
    assert (await env.service.get(alice, row.id)).id == row.id
    for call in (env.service.get(bob, row.id), env.service.open_archive(bob, row.id),
                 env.service.get(alice, str(uuid.uuid4()))):
        with pytest.raises(ApiError) as caught:
            await call
        assert_error(caught.value, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    listed = await env.service.list_versions(bob, requested_page_size=0, page_token="", name="")
    assert row.id not in {r.id for r in listed.items}


async def test_list_pages_with_signed_tokens(env: Env) -> None:
    owner = await add_user(env.sessions)
    ids = [(await env.service.upload(owner, chunks(bot_zip(name=f"bot-{i}")))).id for i in range(5)]
    seen, token = [], ""
    while True:
        page = await env.service.list_versions(owner, requested_page_size=2, page_token=token, name="")
        seen += [r.id for r in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    first = await env.service.list_versions(owner, requested_page_size=2, page_token="", name="")
    with pytest.raises(ApiError) as caught:  # a token of another filter
        await env.service.list_versions(owner, requested_page_size=2, page_token=first.next_page_token,
                                        name="bot-1")
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    with pytest.raises(ApiError) as caught:
        await env.service.list_versions(owner, requested_page_size=-1, page_token="", name="")
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_too_large_stops_reading_and_names_the_limit(env: Env) -> None:
    owner = await add_user(env.sessions)
    env.service.max_upload_bytes = 100 * 1024
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 1
            yield b"\0" * 32 * 1024

    with pytest.raises(ApiError) as caught:
        await env.service.upload(owner, endless())
    assert_error(caught.value, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE")
    assert caught.value.metadata == {"limit": str(100 * 1024)}
    assert "0.0977 MB" in caught.value.message or "MB" in caught.value.message
    assert read == 4  # stopped as soon as the count passed the limit
    assert list(env.spool.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "ARCHIVE_INVALID"), (b"not a zip", "ARCHIVE_INVALID"), (make_zip({"x.txt": b"x"}), "MANIFEST_INVALID")],
    ids=["empty", "not-a-zip", "no-manifest"],
)
async def test_invalid_archives_store_nothing(env: Env, data: bytes, reason: str) -> None:
    owner = await add_user(env.sessions)
    with pytest.raises(ApiError) as caught:
        await env.service.upload(owner, chunks(data))
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert caught.value.violations
    assert await env.outbox_rows() == []
    assert list(env.spool.iterdir()) == []


async def test_review_loop_and_verdict_idempotency(env: Env) -> None:
    owner, admin = await add_user(env.sessions), await add_user(env.sessions, role="admin")
    row = await env.service.upload(owner, chunks(bot_zip()))

    with pytest.raises(ApiError) as caught:  # not awaiting human review yet
        await env.service.review(actor_id=admin, is_admin=True, custom_bot_id=row.id, approve=True, reasons=[])
    assert_error(caught.value, grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    assert caught.value.metadata["state"] == "PENDING_REVIEW"

    event_id = str(uuid.uuid4())
    data = {"customBotId": row.id, "reasons": ["uses eval"], "score": 55}
    assert await env.verdict("custom-bot.awaiting-human-review", data, event_id) is Outcome.APPLIED
    assert await env.verdict("custom-bot.awaiting-human-review", data, event_id) is Outcome.DUPLICATE
    assert await env.verdict("custom-bot.approved", {"customBotId": row.id}) is Outcome.DROPPED  # wrong state
    assert await env.verdict("custom-bot.approved", {"customBotId": str(uuid.uuid4())}) is Outcome.DROPPED
    assert await env.verdict("custom-bot.declined", {"customBotId": row.id}) is Outcome.DROPPED  # no reasons
    assert await env.consumers.handle(b"{oops", "custom-bot.approved", env.service.apply_verdict) is Outcome.DROPPED
    waiting = await env.service.get(owner, row.id)
    assert (waiting.state, waiting.review_score, waiting.review_reasons) == ("AWAITING_HUMAN_REVIEW", 55,
                                                                            ["uses eval"])

    with pytest.raises(ApiError) as caught:
        await env.service.review(actor_id=owner, is_admin=False, custom_bot_id=row.id, approve=True, reasons=[])
    assert_error(caught.value, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    with pytest.raises(ApiError) as caught:
        await env.service.review(actor_id=admin, is_admin=True, custom_bot_id=str(uuid.uuid4()), approve=True,
                                 reasons=[])
    assert_error(caught.value, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    with pytest.raises(ApiError) as caught:
        await env.service.review(actor_id=admin, is_admin=True, custom_bot_id=row.id, approve=False, reasons=[])
    assert_error(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")

    declined = await env.service.review(actor_id=admin, is_admin=True, custom_bot_id=row.id, approve=False,
                                        reasons=["reads ~/.ssh"])
    assert (declined.state, declined.reviewer, declined.review_reasons) == ("DECLINED", admin, ["reads ~/.ssh"])
    assert declined.etag != waiting.etag


async def test_analysis_failed_waits_for_a_human(env: Env) -> None:
    owner = await add_user(env.sessions)
    row = await env.service.upload(owner, chunks(bot_zip()))
    assert await env.verdict("custom-bot.analysis-failed", {"customBotId": row.id, "error": "timeout"}) \
        is Outcome.APPLIED
    after = await env.service.get(owner, row.id)
    assert after.state == "AWAITING_HUMAN_REVIEW" and "timeout" in after.review_reasons[0]


async def test_a_database_outage_means_retry(tmp_path: Path) -> None:
    dead = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nope' / 'x.db'}")
    (tmp_path / "missing" / "nope" / "x.db").mkdir()  # a directory: every connect fails
    consumers = EventConsumers(session_factory(dead), lambda: None)

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        raise AssertionError("not reached")

    raw = orjson.dumps({"id": "e1", "type": "custom-bot.approved", "data": {"customBotId": "x"}})
    try:
        assert await consumers.handle(raw, "custom-bot.approved", handler) is Outcome.RETRY
    finally:
        await dead.dispose()
