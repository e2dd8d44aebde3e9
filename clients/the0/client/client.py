"""``The0Client``: one small typed class over every service's stub.

Credentials: an API key (what the CLI uses) or a JWT access token; ``login``
and ``register`` keep the returned access token for later calls. Errors come
out as typed exceptions (``the0.client.errors``); streams are iterators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc, user_pb2
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.client.errors import from_rpc_error
from the0.custom_bot.v1 import custom_bot_pb2, custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc

T = TypeVar("T")
UPLOAD_CHUNK_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class The0Client:
    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        api_key: str | None = None,
        access_token: str | None = None,
        secure: bool = False,
        timeout: float = 30.0,
    ) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.insecure_channel(target, options=options)
        )
        self.api_key = api_key
        self.access_token = access_token
        self.timeout = timeout
        self._auth = auth_service_pb2_grpc.AuthServiceStub(self._channel)
        self._keys = api_key_service_pb2_grpc.ApiKeyServiceStub(self._channel)
        self._bots = bot_service_pb2_grpc.BotServiceStub(self._channel)
        self._custom_bots = custom_bot_service_pb2_grpc.CustomBotServiceStub(self._channel)
        self._backtests = backtest_service_pb2_grpc.BacktestServiceStub(self._channel)
        self._health = health_service_pb2_grpc.HealthServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------

    def _metadata(self) -> list[tuple[str, str]]:
        if self.access_token:
            return [("authorization", f"Bearer {self.access_token}")]
        if self.api_key:
            return [("authorization", f"ApiKey {self.api_key}")]
        return []

    def _call(self, method: Callable[..., T], request: Any, *, timeout: float | None = None) -> T:
        try:
            return method(request, metadata=self._metadata(), timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _stream(self, method: Callable[..., Any], request: Any) -> Iterator[Any]:
        try:
            yield from method(request, metadata=self._metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _pages(self, method: Callable[..., Any], request: Any, field: str) -> Iterator[Any]:
        while True:
            page = self._call(method, request)
            yield from getattr(page, field)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # -- health -----------------------------------------------------------------

    def health(self) -> health_service_pb2.GetHealthResponse:
        return self._call(self._health.GetHealth, health_service_pb2.GetHealthRequest())

    # -- auth -------------------------------------------------------------------

    def register(
        self, email: str, password: str, username: str, *, first_name: str = "", last_name: str = ""
    ) -> auth_service_pb2.AuthTokens:
        tokens = self._call(
            self._auth.Register,
            auth_service_pb2.RegisterRequest(
                email=email, password=password, username=username, first_name=first_name, last_name=last_name
            ),
        )
        self.access_token = tokens.access_token
        return tokens

    def login(self, email: str, password: str) -> auth_service_pb2.AuthTokens:
        tokens = self._call(self._auth.Login, auth_service_pb2.LoginRequest(email=email, password=password))
        self.access_token = tokens.access_token
        return tokens

    def refresh(self, refresh_token: str) -> auth_service_pb2.AuthTokens:
        tokens = self._call(
            self._auth.RefreshToken, auth_service_pb2.RefreshTokenRequest(refresh_token=refresh_token)
        )
        self.access_token = tokens.access_token
        return tokens

    def logout(self) -> None:
        self._call(self._auth.Logout, auth_service_pb2.LogoutRequest())
        self.access_token = None

    def me(self) -> user_pb2.User:
        return self._call(self._auth.GetCurrentUser, auth_service_pb2.GetCurrentUserRequest())

    # -- API keys -----------------------------------------------------------------

    def create_api_key(
        self, name: str, *, expire_time: datetime | None = None
    ) -> api_key_service_pb2.CreateApiKeyResponse:
        key = api_key_pb2.ApiKey(name=name)
        if expire_time is not None:
            key.expire_time.FromDatetime(expire_time)
        return self._call(self._keys.CreateApiKey, api_key_service_pb2.CreateApiKeyRequest(api_key=key))

    def list_api_keys(self) -> Iterator[api_key_pb2.ApiKey]:
        return self._pages(self._keys.ListApiKeys, api_key_service_pb2.ListApiKeysRequest(), "api_keys")

    def revoke_api_key(self, key_id: str) -> api_key_pb2.ApiKey:
        return self._call(self._keys.RevokeApiKey, api_key_service_pb2.RevokeApiKeyRequest(id=key_id))

    # -- custom bots ----------------------------------------------------------------

    def upload_custom_bot(self, archive: Path | bytes) -> custom_bot_pb2.CustomBot:
        """Stream a zip to the server in 1 MiB chunks; returns the new version."""

        def chunks() -> Iterator[custom_bot_service_pb2.UploadCustomBotRequest]:
            if isinstance(archive, bytes):
                for start in range(0, max(len(archive), 1), UPLOAD_CHUNK_BYTES):
                    yield _chunk(archive[start : start + UPLOAD_CHUNK_BYTES])
                return
            with archive.open("rb") as file:
                while piece := file.read(UPLOAD_CHUNK_BYTES):
                    yield _chunk(piece)

        return self._call(self._custom_bots.UploadCustomBot, chunks(), timeout=300)

    def list_custom_bots(self, *, name: str = "") -> Iterator[custom_bot_pb2.CustomBot]:
        return self._pages(
            self._custom_bots.ListCustomBots, custom_bot_service_pb2.ListCustomBotsRequest(name=name), "custom_bots"
        )

    def get_custom_bot(self, custom_bot_id: str) -> custom_bot_pb2.CustomBot:
        return self._call(
            self._custom_bots.GetCustomBot, custom_bot_service_pb2.GetCustomBotRequest(id=custom_bot_id)
        )

    def download_custom_bot_archive(self, custom_bot_id: str) -> Iterator[bytes]:
        request = custom_bot_service_pb2.DownloadCustomBotArchiveRequest(id=custom_bot_id)
        return (body.data for body in self._stream(self._custom_bots.DownloadCustomBotArchive, request))

    def watch_custom_bot(self, custom_bot_id: str) -> Iterator[custom_bot_service_pb2.WatchCustomBotResponse]:
        request = custom_bot_service_pb2.WatchCustomBotRequest(id=custom_bot_id)
        return self._stream(self._custom_bots.WatchCustomBot, request)

    # -- bots ---------------------------------------------------------------------

    def create_bot(self, name: str, config: dict[str, Any], *, request_id: str = "") -> bot_pb2.Bot:
        bot = bot_pb2.Bot(name=name, config=_struct(config))
        return self._call(self._bots.CreateBot, bot_service_pb2.CreateBotRequest(bot=bot, request_id=request_id))

    def list_bots(self) -> Iterator[bot_pb2.Bot]:
        return self._pages(self._bots.ListBots, bot_service_pb2.ListBotsRequest(), "bots")

    def get_bot(self, bot_id: str) -> bot_pb2.Bot:
        return self._call(self._bots.GetBot, bot_service_pb2.GetBotRequest(id=bot_id))

    def deploy_bot(self, bot_id: str, *, request_id: str = "") -> bot_pb2.Bot:
        return self._call(self._bots.DeployBot, bot_service_pb2.DeployBotRequest(id=bot_id, request_id=request_id))

    def stop_bot(self, bot_id: str) -> bot_pb2.Bot:
        return self._call(self._bots.StopBot, bot_service_pb2.StopBotRequest(id=bot_id))

    def delete_bot(self, bot_id: str) -> None:
        self._call(self._bots.DeleteBot, bot_service_pb2.DeleteBotRequest(id=bot_id))

    def watch_bot(self, bot_id: str) -> Iterator[bot_service_pb2.WatchBotResponse]:
        return self._stream(self._bots.WatchBot, bot_service_pb2.WatchBotRequest(id=bot_id))

    def list_bot_executions(self, bot_id: str, *, page_size: int = 0) -> Iterator[bot_pb2.BotExecution]:
        """Newest first, every page (the server keeps a bounded history per bot)."""
        request = bot_service_pb2.ListBotExecutionsRequest(id=bot_id, page_size=page_size)
        return self._pages(self._bots.ListBotExecutions, request, "executions")

    def list_bot_logs(
        self, bot_id: str, *, since: datetime | None = None, until: datetime | None = None, page_size: int = 0
    ) -> Iterator[bot_service_pb2.BotLogLine]:
        """Oldest first over [since, until), every page."""
        request = bot_service_pb2.ListBotLogsRequest(id=bot_id, page_size=page_size)
        if since is not None:
            request.since.CopyFrom(_timestamp(since))
        if until is not None:
            request.until.CopyFrom(_timestamp(until))
        return self._pages(self._bots.ListBotLogs, request, "lines")

    def stream_bot_logs(
        self, bot_id: str, *, tail_lines: int = 0, after_cursor: str = ""
    ) -> Iterator[bot_service_pb2.StreamBotLogsResponse]:
        """The last ``tail_lines`` lines (or every line after ``after_cursor``), then each new one."""
        request = bot_service_pb2.StreamBotLogsRequest(id=bot_id, tail_lines=tail_lines, after_cursor=after_cursor)
        return self._stream(self._bots.StreamBotLogs, request)

    # -- backtests -----------------------------------------------------------------

    def create_backtest(self, name: str, config: dict[str, Any], *, request_id: str = "") -> backtest_pb2.Backtest:
        backtest = backtest_pb2.Backtest(name=name, config=_struct(config))
        request = backtest_service_pb2.CreateBacktestRequest(backtest=backtest, request_id=request_id)
        return self._call(self._backtests.CreateBacktest, request)

    def list_backtests(self) -> Iterator[backtest_pb2.Backtest]:
        return self._pages(self._backtests.ListBacktests, backtest_service_pb2.ListBacktestsRequest(), "backtests")

    def get_backtest(self, backtest_id: str) -> backtest_pb2.Backtest:
        return self._call(self._backtests.GetBacktest, backtest_service_pb2.GetBacktestRequest(id=backtest_id))

    def backtest_results(self, backtest_id: str) -> bytes:
        request = backtest_service_pb2.GetBacktestResultsRequest(id=backtest_id)
        return b"".join(body.data for body in self._stream(self._backtests.GetBacktestResults, request))

    def backtest_logs(self, backtest_id: str) -> bytes:
        request = backtest_service_pb2.GetBacktestLogsRequest(id=backtest_id)
        return b"".join(body.data for body in self._stream(self._backtests.GetBacktestLogs, request))

    def cancel_backtest(self, backtest_id: str) -> backtest_pb2.Backtest:
        return self._call(self._backtests.CancelBacktest, backtest_service_pb2.CancelBacktestRequest(id=backtest_id))

    def watch_backtest(self, backtest_id: str) -> Iterator[backtest_service_pb2.WatchBacktestResponse]:
        return self._stream(self._backtests.WatchBacktest, backtest_service_pb2.WatchBacktestRequest(id=backtest_id))


def _chunk(data: bytes) -> custom_bot_service_pb2.UploadCustomBotRequest:
    request = custom_bot_service_pb2.UploadCustomBotRequest()
    request.chunk.content_type = "application/zip"
    request.chunk.data = data
    return request


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
