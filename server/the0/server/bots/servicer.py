"""BotService over gRPC: proto <-> domain conversion and one service call per RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc.aio
from cachetools import LRUCache
from google.protobuf import empty_pb2, json_format, timestamp_pb2

from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.common.v1 import watch_pb2
from the0.server.bot_logs.rpc import BotLogsRpc
from the0.server.bots.executions import BotExecution, BotExecutions
from the0.server.bots.service import Bot, BotDeleted, BotService
from the0.server.errors import FieldViolation, InvalidArgument, Unavailable
from the0.server.events.read_cache import ReadCache
from the0.server.events.watch_hub import Heartbeat
from the0.server.identity.principal import current_principal
from the0.server.proto_values import now_timestamp, to_struct, to_timestamp
from the0.server.validation import clear_output_only, validate_request

UPDATABLE_PATHS = ("name", "config")
_WATCH_MESSAGE_CACHE = 1024
_RENDER_CACHE = 10_000
_EXECUTION_STATES = {
    "RUNNING": bot_pb2.BOT_EXECUTION_STATE_RUNNING,
    "COMPLETED": bot_pb2.BOT_EXECUTION_STATE_COMPLETED,
    "FAILED": bot_pb2.BOT_EXECUTION_STATE_FAILED,
}


def _iso_timestamp(value: Any) -> timestamp_pb2.Timestamp | None:
    if not isinstance(value, str):
        return None
    try:
        return to_timestamp(datetime.fromisoformat(value).astimezone(UTC))
    except ValueError:
        return None


def state_to_proto(state: str) -> bot_pb2.BotState.ValueType:
    return bot_pb2.BotState.Value(f"BOT_STATE_{state}")


def state_from_proto(value: bot_pb2.BotState.ValueType) -> str | None:
    """None for UNSPECIFIED (no filter); INVALID_ARGUMENT for numbers the contract does not know."""
    if value == bot_pb2.BOT_STATE_UNSPECIFIED:
        return None
    try:
        return bot_pb2.BotState.Name(value).removeprefix("BOT_STATE_")
    except ValueError as error:
        raise InvalidArgument(
            f"state {value} is not a bot state", violations=[FieldViolation("state", "is not a BotState")]
        ) from error


def bot_to_proto(bot: Bot) -> bot_pb2.Bot:
    message = bot_pb2.Bot(
        id=bot.id,
        name=bot.name,
        config=to_struct(bot.config),
        state=state_to_proto(bot.state),
        custom_bot_id=bot.custom_bot_id,
        error=bot.error or "",
        etag=bot.etag,
        create_time=to_timestamp(bot.create_time),
        update_time=to_timestamp(bot.update_time),
    )
    execution = bot.last_execution
    if execution:
        proto = message.last_execution
        proto.id = str(execution.get("id") or "")
        proto.state = _EXECUTION_STATES.get(
            str(execution.get("state")), bot_pb2.BOT_EXECUTION_STATE_UNSPECIFIED
        )
        for field, key in (("start_time", "startTime"), ("end_time", "endTime")):
            if (stamp := _iso_timestamp(execution.get(key))) is not None:
                getattr(proto, field).CopyFrom(stamp)
        if isinstance(execution.get("result"), dict):
            proto.result.CopyFrom(to_struct(execution["result"]))
        proto.error = str(execution.get("error") or "")
    return message


def execution_to_proto(execution: BotExecution) -> bot_pb2.BotExecution:
    message = bot_pb2.BotExecution(
        id=execution.id,
        state=_EXECUTION_STATES.get(execution.state, bot_pb2.BOT_EXECUTION_STATE_UNSPECIFIED),
        error=execution.error or "",
    )
    if execution.start_time is not None:
        message.start_time.CopyFrom(to_timestamp(execution.start_time))
    if execution.end_time is not None:
        message.end_time.CopyFrom(to_timestamp(execution.end_time))
    if execution.result is not None:
        message.result.CopyFrom(to_struct(execution.result))
    return message


def _config(message: bot_pb2.Bot) -> dict[str, Any]:
    return json_format.MessageToDict(message.config)


def _require_id(value: str, field: str = "id") -> str:
    if not value:
        raise InvalidArgument(
            f"missing required field: {field}", violations=[FieldViolation(field, "is required")]
        )
    return value


class BotServicer(bot_service_pb2_grpc.BotServiceServicer):
    def __init__(
        self, service: BotService, executions: BotExecutions, *, reads: ReadCache[bot_pb2.Bot] | None = None
    ) -> None:
        self._service = service
        self._executions = executions
        # GetBot's rendered bots, dropped by the watch fan-out on every change (events/read_cache.py).
        self._reads = reads
        # A bot is rendered once per version (its etag changes on every write): list pages and
        # reads of unchanged bots reuse the message.
        self._renders: LRUCache[tuple[str, str], bot_pb2.Bot] = LRUCache(maxsize=_RENDER_CACHE)
        # One change reaches every watcher of a bot: convert it once, not once per stream.
        self._watch_messages: LRUCache[tuple[str, str], bot_service_pb2.WatchBotResponse] = LRUCache(
            maxsize=_WATCH_MESSAGE_CACHE
        )

    def _rendered(self, bot: Bot) -> bot_pb2.Bot:
        key = (bot.id, bot.etag)
        message = self._renders.get(key)
        if message is None:
            message = self._renders[key] = bot_to_proto(bot)
        return message

    def _watch_message(self, bot: Bot) -> bot_service_pb2.WatchBotResponse:
        key = (bot.id, bot.etag)
        message = self._watch_messages.get(key)
        if message is None:
            message = bot_service_pb2.WatchBotResponse(bot=self._rendered(bot))
            self._watch_messages[key] = message
        return message

    async def ListBots(
        self,
        request: bot_service_pb2.ListBotsRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.ListBotsRequest, bot_service_pb2.ListBotsResponse],
    ) -> bot_service_pb2.ListBotsResponse:
        state = state_from_proto(request.state)
        page = await self._service.list(
            current_principal().user_id,
            state=state,
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return bot_service_pb2.ListBotsResponse(
            bots=[self._rendered(b) for b in page.bots], next_page_token=page.next_page_token
        )

    async def CreateBot(
        self,
        request: bot_service_pb2.CreateBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.CreateBotRequest, bot_pb2.Bot],
    ) -> bot_pb2.Bot:
        owner = current_principal().user_id
        validate_request(request)
        bot = await self._service.create(
            owner, name=request.bot.name, config=_config(request.bot), request_id=request.request_id
        )
        return bot_to_proto(bot)

    async def GetBot(
        self,
        request: bot_service_pb2.GetBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.GetBotRequest, bot_pb2.Bot],
    ) -> bot_pb2.Bot:
        owner = current_principal().user_id
        validate_request(request)
        bot_id = request.id

        async def render() -> bot_pb2.Bot:
            return self._rendered(await self._service.get(owner, bot_id))

        if self._reads is None:
            return await render()
        # The same message may go to many callers: gRPC only serializes it, nothing changes it.
        return await self._reads.get(owner, bot_id, render)

    async def UpdateBot(
        self,
        request: bot_service_pb2.UpdateBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.UpdateBotRequest, bot_pb2.Bot],
    ) -> bot_pb2.Bot:
        owner = current_principal().user_id
        if not request.HasField("bot"):
            raise InvalidArgument(
                "missing required field: bot", violations=[FieldViolation("bot", "is required")]
            )
        bot_id = _require_id(request.bot.id, "bot.id")  # names the bot: read before output-only fields go
        clear_output_only(request)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        unknown = [p for p in paths if p not in (*UPDATABLE_PATHS, "*")]
        if unknown:
            raise InvalidArgument(
                f"updateMask has paths that cannot be updated: {', '.join(unknown)} "
                "(allowed: name, config, *)",
                violations=[FieldViolation("updateMask", f"unknown path {p!r}") for p in unknown],
            )
        replace = set(UPDATABLE_PATHS) if not paths or "*" in paths else set(paths)
        missing = []
        if "name" in replace and not request.bot.name:
            missing.append(FieldViolation("bot.name", "is required"))
        if "config" in replace and not request.bot.HasField("config"):
            missing.append(FieldViolation("bot.config", "is required"))
        if missing:
            raise InvalidArgument(
                "missing required field: " + ", ".join(v.field for v in missing), violations=missing
            )
        bot = await self._service.update(
            owner,
            bot_id,
            name=request.bot.name if "name" in replace else None,
            config=_config(request.bot) if "config" in replace else None,
            etag=request.bot.etag,
        )
        return bot_to_proto(bot)

    async def DeleteBot(
        self,
        request: bot_service_pb2.DeleteBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.DeleteBotRequest, empty_pb2.Empty],
    ) -> empty_pb2.Empty:
        owner = current_principal().user_id
        validate_request(request)
        await self._service.delete(owner, request.id, etag=request.etag)
        return empty_pb2.Empty()

    async def DeployBot(
        self,
        request: bot_service_pb2.DeployBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.DeployBotRequest, bot_pb2.Bot],
    ) -> bot_pb2.Bot:
        owner = current_principal().user_id
        validate_request(request)
        return bot_to_proto(await self._service.deploy(owner, request.id, request_id=request.request_id))

    async def StopBot(
        self,
        request: bot_service_pb2.StopBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.StopBotRequest, bot_pb2.Bot],
    ) -> bot_pb2.Bot:
        owner = current_principal().user_id
        validate_request(request)
        return bot_to_proto(await self._service.stop(owner, request.id))

    async def ListBotExecutions(
        self,
        request: bot_service_pb2.ListBotExecutionsRequest,
        context: grpc.aio.ServicerContext[
            bot_service_pb2.ListBotExecutionsRequest, bot_service_pb2.ListBotExecutionsResponse
        ],
    ) -> bot_service_pb2.ListBotExecutionsResponse:
        owner = current_principal().user_id
        validate_request(request)
        page = await self._executions.list(
            owner, request.id, requested_page_size=request.page_size, page_token=request.page_token
        )
        return bot_service_pb2.ListBotExecutionsResponse(
            executions=[execution_to_proto(e) for e in page.executions], next_page_token=page.next_page_token
        )

    async def WatchBot(
        self,
        request: bot_service_pb2.WatchBotRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.WatchBotRequest, bot_service_pb2.WatchBotResponse],
    ) -> AsyncIterator[bot_service_pb2.WatchBotResponse]:
        owner = current_principal().user_id
        validate_request(request)
        stream = self._service.watch(owner, request.id)
        try:
            async for item in stream:
                if isinstance(item, Bot):
                    yield self._watch_message(item)
                elif isinstance(item, BotDeleted):
                    yield bot_service_pb2.WatchBotResponse(
                        deleted=watch_pb2.Deleted(id=item.id, delete_time=to_timestamp(item.delete_time))
                    )
                elif isinstance(item, Heartbeat):
                    yield bot_service_pb2.WatchBotResponse(
                        heartbeat=watch_pb2.Heartbeat(time=now_timestamp())
                    )
        finally:
            await stream.aclose()

    # -- logs: the bot_logs domain serves them; the App sets ``logs`` -----------

    logs: BotLogsRpc | None = None

    def _logs(self) -> BotLogsRpc:
        if self.logs is None:
            raise Unavailable("bot logs are not served by this server")
        return self.logs

    async def ListBotLogs(
        self,
        request: bot_service_pb2.ListBotLogsRequest,
        context: grpc.aio.ServicerContext[bot_service_pb2.ListBotLogsRequest, bot_service_pb2.ListBotLogsResponse],
    ) -> bot_service_pb2.ListBotLogsResponse:
        return await self._logs().list(request)

    async def StreamBotLogs(
        self,
        request: bot_service_pb2.StreamBotLogsRequest,
        context: grpc.aio.ServicerContext[
            bot_service_pb2.StreamBotLogsRequest, bot_service_pb2.StreamBotLogsResponse
        ],
    ) -> AsyncIterator[bot_service_pb2.StreamBotLogsResponse]:
        async for message in self._logs().stream(request):
            yield message
