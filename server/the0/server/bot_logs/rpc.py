"""ListBotLogs and StreamBotLogs: proto <-> values; BotServicer delegates both here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from the0.bot.v1 import bot_service_pb2
from the0.common.v1 import watch_pb2
from the0.server.bot_logs.service import BotLogsService, LogBotDeleted, LogHeartbeat, LogLineValue
from the0.server.identity.principal import current_principal
from the0.server.proto_values import now_timestamp, to_timestamp
from the0.server.validation import validate_request


def _time(value: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def line_to_proto(line: LogLineValue) -> bot_service_pb2.BotLogLine:
    return bot_service_pb2.BotLogLine(time=to_timestamp(line.time), level=line.level, text=line.text,
                                      cursor=line.cursor)


class BotLogsRpc:
    def __init__(self, service: BotLogsService) -> None:
        self.service = service

    async def list(self, request: bot_service_pb2.ListBotLogsRequest) -> bot_service_pb2.ListBotLogsResponse:
        owner = current_principal().user_id
        validate_request(request)
        page = await self.service.list(
            owner, request.id,
            since=_time(request.since, request.HasField("since")),
            until=_time(request.until, request.HasField("until")),
            page_size=request.page_size, page_token=request.page_token,
        )
        return bot_service_pb2.ListBotLogsResponse(
            lines=[line_to_proto(x) for x in page.lines], next_page_token=page.next_page_token
        )

    async def stream(
        self, request: bot_service_pb2.StreamBotLogsRequest
    ) -> AsyncIterator[bot_service_pb2.StreamBotLogsResponse]:
        owner = current_principal().user_id
        validate_request(request)
        items = self.service.stream(owner, request.id, tail_lines=request.tail_lines,
                                    after_cursor=request.after_cursor)
        try:
            async for item in items:
                if isinstance(item, LogLineValue):
                    yield bot_service_pb2.StreamBotLogsResponse(line=line_to_proto(item))
                elif isinstance(item, LogHeartbeat):
                    yield bot_service_pb2.StreamBotLogsResponse(heartbeat=watch_pb2.Heartbeat(time=now_timestamp()))
                elif isinstance(item, LogBotDeleted):
                    yield bot_service_pb2.StreamBotLogsResponse(
                        deleted=watch_pb2.Deleted(id=item.bot_id, delete_time=to_timestamp(item.time))
                    )
        finally:
            await items.aclose()
