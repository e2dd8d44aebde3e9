"""The request message of every RPC, built from plain arguments; shared by the sync and asyncio clients."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2

from the0.admin.v1 import admin_service_pb2
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2
from the0.auth.v1 import auth_service_pb2
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.client.values import new_request_id, struct, timestamp
from the0.custom_bot.v1 import custom_bot_service_pb2

UPLOAD_CHUNK_BYTES = 1024 * 1024


def register(email: str, password: str, username: str, first_name: str, last_name: str
             ) -> auth_service_pb2.RegisterRequest:
    return auth_service_pb2.RegisterRequest(
        email=email, password=password, username=username, first_name=first_name, last_name=last_name)


def create_api_key(name: str, expire_time: datetime | None,
                   scopes: Sequence[str] = ()) -> api_key_service_pb2.CreateApiKeyRequest:
    key = api_key_pb2.ApiKey(name=name, scopes=list(scopes))
    if expire_time is not None:
        key.expire_time.CopyFrom(timestamp(expire_time))
    return api_key_service_pb2.CreateApiKeyRequest(api_key=key)


def create_bot(name: str, config: dict[str, Any], request_id: str | None) -> bot_service_pb2.CreateBotRequest:
    return bot_service_pb2.CreateBotRequest(
        bot=bot_pb2.Bot(name=name, config=struct(config)), request_id=request_id or new_request_id())


def list_bots(page_size: int, page_token: str, state: int) -> bot_service_pb2.ListBotsRequest:
    return bot_service_pb2.ListBotsRequest(page_size=page_size, page_token=page_token, state=state)  # type: ignore[arg-type]


def update_bot(bot_id: str, *, name: str | None, config: dict[str, Any] | None, etag: str, replace: bool
               ) -> bot_service_pb2.UpdateBotRequest:
    """PATCH the fields given (``update_mask``), or PUT the whole bot with ``replace``; ``etag`` guards it."""
    bot = bot_pb2.Bot(id=bot_id, etag=etag)
    paths = []
    if name is not None:
        bot.name = name
        paths.append("name")
    if config is not None:
        bot.config.CopyFrom(struct(config))
        paths.append("config")
    mask = field_mask_pb2.FieldMask(paths=["*"] if replace else paths)
    return bot_service_pb2.UpdateBotRequest(bot=bot, update_mask=mask)


def list_bot_logs(bot_id: str, since: datetime | None, until: datetime | None, page_size: int, page_token: str
                  ) -> bot_service_pb2.ListBotLogsRequest:
    request = bot_service_pb2.ListBotLogsRequest(id=bot_id, page_size=page_size, page_token=page_token)
    if since is not None:
        request.since.CopyFrom(timestamp(since))
    if until is not None:
        request.until.CopyFrom(timestamp(until))
    return request


def list_audit_events(type: str, since: datetime | None, until: datetime | None, page_size: int, page_token: str,
                      *, user_id: str | None = None
                      ) -> auth_service_pb2.ListAuditEventsRequest | admin_service_pb2.ListAuditEventsRequest:
    """The caller's own events; with ``user_id`` (``""``: every user) the admin's request across users."""
    request: auth_service_pb2.ListAuditEventsRequest | admin_service_pb2.ListAuditEventsRequest
    if user_id is None:
        request = auth_service_pb2.ListAuditEventsRequest(type=type, page_size=page_size, page_token=page_token)
    else:
        request = admin_service_pb2.ListAuditEventsRequest(type=type, page_size=page_size, page_token=page_token,
                                                           user_id=user_id)
    if since is not None:
        request.since.CopyFrom(timestamp(since))
    if until is not None:
        request.until.CopyFrom(timestamp(until))
    return request


def upload_chunks(archive: Path | bytes, progress: Any = None) -> Iterator[custom_bot_service_pb2.UploadCustomBotRequest]:
    """The zip in 1 MiB chunks; ``progress(n)`` is told of every chunk's size as it is sent."""

    def chunk(data: bytes) -> custom_bot_service_pb2.UploadCustomBotRequest:
        request = custom_bot_service_pb2.UploadCustomBotRequest()
        request.chunk.content_type = "application/zip"
        request.chunk.data = data
        if progress is not None:
            progress(len(data))
        return request

    if isinstance(archive, bytes):
        for start in range(0, max(len(archive), 1), UPLOAD_CHUNK_BYTES):
            yield chunk(archive[start : start + UPLOAD_CHUNK_BYTES])
        return
    with archive.open("rb") as file:
        while piece := file.read(UPLOAD_CHUNK_BYTES):
            yield chunk(piece)


def review_custom_bot(custom_bot_id: str, approve: bool, reasons: Iterable[str]
                      ) -> custom_bot_service_pb2.ReviewCustomBotRequest:
    decision = custom_bot_service_pb2.REVIEW_DECISION_APPROVE if approve else custom_bot_service_pb2.REVIEW_DECISION_DECLINE
    return custom_bot_service_pb2.ReviewCustomBotRequest(id=custom_bot_id, decision=decision, reasons=list(reasons))


def create_backtest(name: str, config: dict[str, Any], request_id: str | None
                    ) -> backtest_service_pb2.CreateBacktestRequest:
    return backtest_service_pb2.CreateBacktestRequest(
        backtest=backtest_pb2.Backtest(name=name, config=struct(config)), request_id=request_id or new_request_id())


def list_backtests(page_size: int, page_token: str, state: int) -> backtest_service_pb2.ListBacktestsRequest:
    return backtest_service_pb2.ListBacktestsRequest(page_size=page_size, page_token=page_token, state=state)  # type: ignore[arg-type]


def list_users(query: str, state: int, role: int, page_size: int, page_token: str
               ) -> admin_service_pb2.ListUsersRequest:
    return admin_service_pb2.ListUsersRequest(query=query, state=state, role=role,  # type: ignore[arg-type]
                                              page_size=page_size, page_token=page_token)
