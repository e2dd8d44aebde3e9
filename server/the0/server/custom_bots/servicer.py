"""CustomBotService over gRPC: proto ↔ domain, the caller from the auth Principal, one service call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc.aio
from google.api import httpbody_pb2

from the0.common.v1 import watch_pb2
from the0.custom_bot.v1 import custom_bot_pb2, custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.server.custom_bots.service import CustomBot, CustomBotService
from the0.server.identity.principal import current_principal
from the0.server.proto_values import now_timestamp, to_struct, to_timestamp
from the0.server.validation import validate_request

_STATES = {
    "PENDING_REVIEW": custom_bot_pb2.CUSTOM_BOT_STATE_PENDING_REVIEW,
    "APPROVED": custom_bot_pb2.CUSTOM_BOT_STATE_APPROVED,
    "DECLINED": custom_bot_pb2.CUSTOM_BOT_STATE_DECLINED,
    "AWAITING_HUMAN_REVIEW": custom_bot_pb2.CUSTOM_BOT_STATE_AWAITING_HUMAN_REVIEW,
}
_TYPES = {
    "scheduled": custom_bot_pb2.CUSTOM_BOT_TYPE_SCHEDULED,
    "realtime": custom_bot_pb2.CUSTOM_BOT_TYPE_REALTIME,
    "event": custom_bot_pb2.CUSTOM_BOT_TYPE_EVENT,
}
_RUNTIMES = {"python3.11": custom_bot_pb2.RUNTIME_PYTHON3_11, "nodejs20": custom_bot_pb2.RUNTIME_NODEJS20}
_DECISIONS = {
    custom_bot_service_pb2.REVIEW_DECISION_APPROVE: True,
    custom_bot_service_pb2.REVIEW_DECISION_DECLINE: False,
}


def custom_bot_to_proto(custom_bot: CustomBot) -> custom_bot_pb2.CustomBot:
    manifest = custom_bot.manifest
    entrypoints = manifest.get("entrypoints", {})
    schema = manifest.get("schema", {})
    metadata = manifest.get("metadata", {})
    message = custom_bot_pb2.CustomBot(
        id=custom_bot.id,
        name=custom_bot.name,
        version=custom_bot.version,
        state=_STATES[custom_bot.state],
        manifest=custom_bot_pb2.Manifest(
            name=manifest.get("name", custom_bot.name),
            description=manifest.get("description", ""),
            version=manifest.get("version", custom_bot.version),
            author=manifest.get("author", ""),
            type=_TYPES.get(manifest.get("type", ""), custom_bot_pb2.CUSTOM_BOT_TYPE_UNSPECIFIED),
            runtime=_RUNTIMES.get(manifest.get("runtime", ""), custom_bot_pb2.RUNTIME_UNSPECIFIED),
            entrypoints=custom_bot_pb2.Entrypoints(bot=entrypoints.get("bot", ""),
                                                   backtest=entrypoints.get("backtest", "")),
            schema=custom_bot_pb2.SchemaFiles(bot=schema.get("bot", ""), backtest=schema.get("backtest", "")),
            readme=manifest.get("readme", ""),
            metadata=custom_bot_pb2.Metadata(**{k: v for k, v in metadata.items()
                                                if k in ("categories", "instruments", "exchanges", "tags")}),
        ),
        archive=custom_bot_pb2.Archive(size_bytes=custom_bot.size_bytes, sha256=custom_bot.sha256),
        readme=custom_bot.readme,
        etag=custom_bot.etag,
        create_time=to_timestamp(custom_bot.create_time),
        update_time=to_timestamp(custom_bot.update_time),
    )
    if custom_bot.bot_schema is not None:
        message.bot_schema.CopyFrom(to_struct(custom_bot.bot_schema))
    if custom_bot.backtest_schema is not None:
        message.backtest_schema.CopyFrom(to_struct(custom_bot.backtest_schema))
    if custom_bot.review_time is not None:
        message.review.CopyFrom(
            custom_bot_pb2.Review(
                score=custom_bot.review_score or 0,
                reasons=custom_bot.review_reasons or [],
                reviewer=custom_bot.reviewer or "",
                review_time=to_timestamp(custom_bot.review_time),
            )
        )
    return message


async def _chunks(requests: AsyncIterator[custom_bot_service_pb2.UploadCustomBotRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request.chunk.data


class CustomBotServicer(custom_bot_service_pb2_grpc.CustomBotServiceServicer):
    def __init__(self, service: CustomBotService) -> None:
        self._service = service

    async def UploadCustomBot(
        self,
        request_iterator: AsyncIterator[custom_bot_service_pb2.UploadCustomBotRequest],
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.UploadCustomBotRequest, custom_bot_pb2.CustomBot],
    ) -> custom_bot_pb2.CustomBot:
        principal = current_principal()
        custom_bot = await self._service.upload(principal.user_id, _chunks(request_iterator))
        return custom_bot_to_proto(custom_bot)

    async def ListCustomBots(
        self,
        request: custom_bot_service_pb2.ListCustomBotsRequest,
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.ListCustomBotsRequest, custom_bot_service_pb2.ListCustomBotsResponse],
    ) -> custom_bot_service_pb2.ListCustomBotsResponse:
        principal = current_principal()
        validate_request(request)
        page = await self._service.list_versions(
            principal.user_id, requested_page_size=request.page_size, page_token=request.page_token,
            name=request.name,
        )
        return custom_bot_service_pb2.ListCustomBotsResponse(
            custom_bots=[custom_bot_to_proto(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def GetCustomBot(
        self,
        request: custom_bot_service_pb2.GetCustomBotRequest,
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.GetCustomBotRequest, custom_bot_pb2.CustomBot],
    ) -> custom_bot_pb2.CustomBot:
        principal = current_principal()
        validate_request(request)
        return custom_bot_to_proto(await self._service.get(principal.user_id, request.id))

    async def DownloadCustomBotArchive(
        self,
        request: custom_bot_service_pb2.DownloadCustomBotArchiveRequest,
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.DownloadCustomBotArchiveRequest, httpbody_pb2.HttpBody],
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        principal = current_principal()
        validate_request(request)
        chunks = await self._service.open_archive(principal.user_id, request.id)
        async with contextlib.aclosing(chunks):  # releases the store's stream if the client goes away
            async for chunk in chunks:
                yield httpbody_pb2.HttpBody(content_type="application/zip", data=chunk)

    async def ListCustomBotReviewQueue(
        self,
        request: custom_bot_service_pb2.ListCustomBotReviewQueueRequest,
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.ListCustomBotReviewQueueRequest, custom_bot_service_pb2.ListCustomBotReviewQueueResponse],
    ) -> custom_bot_service_pb2.ListCustomBotReviewQueueResponse:
        principal = current_principal()
        validate_request(request)
        page = await self._service.review_queue(
            is_admin=principal.is_admin, requested_page_size=request.page_size, page_token=request.page_token
        )
        return custom_bot_service_pb2.ListCustomBotReviewQueueResponse(
            custom_bots=[custom_bot_to_proto(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def ReviewCustomBot(
        self,
        request: custom_bot_service_pb2.ReviewCustomBotRequest,
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.ReviewCustomBotRequest, custom_bot_pb2.CustomBot],
    ) -> custom_bot_pb2.CustomBot:
        principal = current_principal()
        # The service checks the role before the request, so non-admins learn nothing about ids.
        custom_bot = await self._service.review(
            actor_id=principal.user_id, is_admin=principal.is_admin, custom_bot_id=request.id,
            approve=_DECISIONS.get(request.decision), reasons=list(request.reasons),
        )
        return custom_bot_to_proto(custom_bot)

    async def WatchCustomBot(
        self,
        request: custom_bot_service_pb2.WatchCustomBotRequest,
        context: grpc.aio.ServicerContext[custom_bot_service_pb2.WatchCustomBotRequest, custom_bot_service_pb2.WatchCustomBotResponse],
    ) -> AsyncIterator[custom_bot_service_pb2.WatchCustomBotResponse]:
        principal = current_principal()
        validate_request(request)
        async for item in self._service.watch(principal.user_id, request.id):
            if isinstance(item, CustomBot):
                yield custom_bot_service_pb2.WatchCustomBotResponse(custom_bot=custom_bot_to_proto(item))
            else:
                yield custom_bot_service_pb2.WatchCustomBotResponse(
                    heartbeat=watch_pb2.Heartbeat(time=now_timestamp())
                )
