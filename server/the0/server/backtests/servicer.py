"""BacktestService over gRPC: proto <-> domain conversion and one service call per RPC."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc.aio
from google.api import httpbody_pb2
from google.protobuf import json_format

from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
from the0.common.v1 import watch_pb2
from the0.server.backtests.service import Backtest, BacktestService
from the0.server.errors import FieldViolation, InvalidArgument
from the0.server.events.watch_hub import Heartbeat
from the0.server.identity.principal import current_principal
from the0.server.proto_values import now_timestamp, to_struct, to_timestamp
from the0.server.validation import validate_request

RESULTS_CONTENT_TYPE = "application/json"
LOGS_CONTENT_TYPE = "text/plain; charset=utf-8"


def state_to_proto(state: str) -> backtest_pb2.BacktestState.ValueType:
    return backtest_pb2.BacktestState.Value(f"BACKTEST_STATE_{state}")


def state_from_proto(value: backtest_pb2.BacktestState.ValueType) -> str | None:
    """None for UNSPECIFIED (no filter); INVALID_ARGUMENT for numbers the contract does not know."""
    if value == backtest_pb2.BACKTEST_STATE_UNSPECIFIED:
        return None
    try:
        return backtest_pb2.BacktestState.Name(value).removeprefix("BACKTEST_STATE_")
    except ValueError as error:
        raise InvalidArgument(
            f"state {value} is not a backtest state",
            violations=[FieldViolation("state", "is not a BacktestState")],
        ) from error


def backtest_to_proto(backtest: Backtest) -> backtest_pb2.Backtest:
    message = backtest_pb2.Backtest(
        id=backtest.id,
        name=backtest.name,
        config=to_struct(backtest.config),
        state=state_to_proto(backtest.state),
        custom_bot_id=backtest.custom_bot_id,
        error=backtest.error or "",
        etag=backtest.etag,
        create_time=to_timestamp(backtest.create_time),
        update_time=to_timestamp(backtest.update_time),
    )
    if backtest.summary is not None:
        message.summary.CopyFrom(to_struct(backtest.summary))
    if backtest.start_time is not None:
        message.start_time.CopyFrom(to_timestamp(backtest.start_time))
    if backtest.end_time is not None:
        message.end_time.CopyFrom(to_timestamp(backtest.end_time))
    return message


class BacktestServicer(backtest_service_pb2_grpc.BacktestServiceServicer):
    def __init__(self, service: BacktestService) -> None:
        self._service = service

    async def CreateBacktest(
        self,
        request: backtest_service_pb2.CreateBacktestRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.CreateBacktestRequest, backtest_pb2.Backtest],
    ) -> backtest_pb2.Backtest:
        owner = current_principal().user_id
        validate_request(request)
        backtest = await self._service.create(
            owner,
            name=request.backtest.name,
            config=json_format.MessageToDict(request.backtest.config),
            request_id=request.request_id,
        )
        return backtest_to_proto(backtest)

    async def ListBacktests(
        self,
        request: backtest_service_pb2.ListBacktestsRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.ListBacktestsRequest, backtest_service_pb2.ListBacktestsResponse],
    ) -> backtest_service_pb2.ListBacktestsResponse:
        owner = current_principal().user_id
        page = await self._service.list(
            owner,
            state=state_from_proto(request.state),
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return backtest_service_pb2.ListBacktestsResponse(
            backtests=[backtest_to_proto(b) for b in page.backtests], next_page_token=page.next_page_token
        )

    async def GetBacktest(
        self,
        request: backtest_service_pb2.GetBacktestRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.GetBacktestRequest, backtest_pb2.Backtest],
    ) -> backtest_pb2.Backtest:
        owner = current_principal().user_id
        validate_request(request)
        return backtest_to_proto(await self._service.get(owner, request.id))

    async def CancelBacktest(
        self,
        request: backtest_service_pb2.CancelBacktestRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.CancelBacktestRequest, backtest_pb2.Backtest],
    ) -> backtest_pb2.Backtest:
        owner = current_principal().user_id
        validate_request(request)
        return backtest_to_proto(await self._service.cancel(owner, request.id))

    async def GetBacktestResults(
        self,
        request: backtest_service_pb2.GetBacktestResultsRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.GetBacktestResultsRequest, httpbody_pb2.HttpBody],
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        owner = current_principal().user_id
        validate_request(request)
        chunks = await self._service.open_results(owner, request.id)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield httpbody_pb2.HttpBody(content_type=RESULTS_CONTENT_TYPE, data=chunk)

    async def GetBacktestLogs(
        self,
        request: backtest_service_pb2.GetBacktestLogsRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.GetBacktestLogsRequest, httpbody_pb2.HttpBody],
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        owner = current_principal().user_id
        validate_request(request)
        chunks = await self._service.open_logs(owner, request.id)
        async with contextlib.aclosing(chunks):  # releases the store's stream if the client goes away
            async for chunk in chunks:
                yield httpbody_pb2.HttpBody(content_type=LOGS_CONTENT_TYPE, data=chunk)

    async def WatchBacktest(
        self,
        request: backtest_service_pb2.WatchBacktestRequest,
        context: grpc.aio.ServicerContext[backtest_service_pb2.WatchBacktestRequest, backtest_service_pb2.WatchBacktestResponse],
    ) -> AsyncIterator[backtest_service_pb2.WatchBacktestResponse]:
        owner = current_principal().user_id
        validate_request(request)
        stream = self._service.watch(owner, request.id)
        try:
            async for item in stream:
                if isinstance(item, Backtest):
                    yield backtest_service_pb2.WatchBacktestResponse(backtest=backtest_to_proto(item))
                elif isinstance(item, Heartbeat):
                    yield backtest_service_pb2.WatchBacktestResponse(
                        heartbeat=watch_pb2.Heartbeat(time=now_timestamp())
                    )
        finally:
            await stream.aclose()
