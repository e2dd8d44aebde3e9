"""``AsyncThe0Client``: ``The0Client`` over ``grpc.aio``, for asyncio programs and internal services.

    async with AsyncThe0Client("localhost:50051", api_key="the0_...") as client:
        bot = await client.get_bot(bot_id)
        async for event in client.watch_bot(bot_id):
            ...

The same methods, arguments and behaviour as the sync client (deadlines, retries on UNAVAILABLE, refresh
on TOKEN_EXPIRED, typed errors); unary methods are coroutines, streams and ``iter_*`` async iterators.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from google.api import httpbody_pb2
from google.protobuf.message import Message

from the0.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import audit_event_pb2, auth_service_pb2, auth_service_pb2_grpc, user_pb2
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.client import requests
from the0.client.channel import DEFAULT_TIMEOUT_SECONDS, UPLOAD_TIMEOUT_SECONDS, channel_options
from the0.client.client import MAX_RECOVERIES, ProgressCallback, unauthenticated_error
from the0.client.credentials import Credentials, Recovery, RefusedKeyCallback, TokensCallback, Used
from the0.client.errors import The0Error, from_rpc_error
from the0.client.values import new_request_id
from the0.custom_bot.v1 import custom_bot_pb2, custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc

T = TypeVar("T")
M = TypeVar("M", bound=Message)


class AsyncThe0Client:
    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        api_key: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        on_tokens: TokensCallback | None = None,
        on_api_key_refused: RefusedKeyCallback | None = None,
        secure: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        options = channel_options()
        self._channel = (
            grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.aio.insecure_channel(target, options=options)
        )
        self.credentials = Credentials(api_key, access_token, refresh_token, on_tokens, on_api_key_refused)
        self.timeout = timeout
        self._refreshing = asyncio.Lock()
        self._auth = auth_service_pb2_grpc.AuthServiceStub(self._channel)
        self._keys = api_key_service_pb2_grpc.ApiKeyServiceStub(self._channel)
        self._bots = bot_service_pb2_grpc.BotServiceStub(self._channel)
        self._custom_bots = custom_bot_service_pb2_grpc.CustomBotServiceStub(self._channel)
        self._backtests = backtest_service_pb2_grpc.BacktestServiceStub(self._channel)
        self._health = health_service_pb2_grpc.HealthServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------

    async def _unary(self, method: Callable[..., Awaitable[T]], request: Any, *, session: bool = False,
                     timeout: float | None = None) -> T:
        """One call; ``request`` may be a function making it anew (a client stream cannot be sent twice)."""
        for attempt in range(MAX_RECOVERIES + 1):
            used, token, metadata = self.credentials.metadata(session)
            try:
                return await method(request() if callable(request) else request, metadata=metadata,
                                    timeout=timeout or self.timeout)
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if attempt == MAX_RECOVERIES or not await self._recover(error, used, token):
                    raise error from None
        raise AssertionError("unreachable")

    async def _recover(self, error: The0Error, used: Used, token: str | None) -> bool:
        recovery = self.credentials.recovery(error, used, token)
        if recovery is Recovery.REFRESH:
            async with self._refreshing:
                if self.credentials.access_token == token:  # no other call refreshed meanwhile
                    await self.refresh()
        return recovery is not Recovery.NONE

    async def _stream(self, method: Callable[..., AsyncIterable[M]], request: Any) -> AsyncIterator[M]:
        """A server stream; a refused credential is recovered from only before the first message."""
        for attempt in range(MAX_RECOVERIES + 1):
            used, token, metadata = self.credentials.metadata(False)
            started = False
            try:
                async for message in method(request, metadata=metadata):
                    started = True
                    yield message
                return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if started or attempt == MAX_RECOVERIES or not await self._recover(error, used, token):
                    raise error from None

    async def _watch(self, method: Callable[..., AsyncIterable[M]], request: Any) -> AsyncIterator[M]:
        """A watch; when the server ends it because the access token expired, refresh and watch again."""
        while True:
            used, token, _ = self.credentials.metadata(False)
            refreshed = False
            async for message in self._stream(method, request):
                expired = message.WhichOneof("event") == "unauthenticated"
                if expired and await self._recover(unauthenticated_error(message), used, token):
                    refreshed = True
                    break
                yield message
            if not refreshed:
                return

    async def _pages(self, list_page: Callable[[str], Awaitable[Any]], field: str) -> AsyncIterator[Any]:
        token = ""
        while True:
            page = await list_page(token)
            for item in getattr(page, field):
                yield item
            if not page.next_page_token:
                return
            token = page.next_page_token

    # -- health -----------------------------------------------------------------

    async def health(self) -> health_service_pb2.GetHealthResponse:
        return await self._unary(self._health.GetHealth, health_service_pb2.GetHealthRequest())

    # -- auth -------------------------------------------------------------------

    async def register(self, email: str, password: str, username: str, *, first_name: str = "", last_name: str = ""
                 ) -> auth_service_pb2.AuthTokens:
        request = requests.register(email, password, username, first_name, last_name)
        tokens = await self._unary(self._auth.Register, request)
        self.credentials.take_tokens(tokens)
        return tokens

    async def login(self, email: str, password: str) -> auth_service_pb2.AuthTokens:
        tokens = await self._unary(self._auth.Login, auth_service_pb2.LoginRequest(email=email, password=password))
        self.credentials.take_tokens(tokens)
        return tokens

    async def refresh(self) -> auth_service_pb2.AuthTokens:
        """Trade the refresh token for a new pair (the old refresh token stops working)."""
        request = auth_service_pb2.RefreshTokenRequest(refresh_token=self.credentials.refresh_token or "")
        try:
            tokens = await self._auth.RefreshToken(request, timeout=self.timeout)
        except grpc.RpcError as rpc_error:
            raise from_rpc_error(rpc_error) from None
        self.credentials.take_tokens(tokens)
        return tokens

    async def logout(self) -> None:
        await self._unary(self._auth.Logout, auth_service_pb2.LogoutRequest(), session=True)
        self.credentials.forget_session()

    async def me(self) -> user_pb2.User:
        return await self._unary(self._auth.GetCurrentUser, auth_service_pb2.GetCurrentUserRequest())

    # -- two-factor login ------------------------------------------------------------

    async def complete_login(self, challenge_token: str, *, code: str = "", recovery_code: str = ""
                       ) -> auth_service_pb2.AuthTokens:
        """The second step of a login whose answer had ``second_factor``: a TOTP or a recovery code."""
        request = auth_service_pb2.CompleteLoginRequest(challenge_token=challenge_token, code=code,
                                                        recovery_code=recovery_code)
        tokens = await self._unary(self._auth.CompleteLogin, request)
        self.credentials.take_tokens(tokens)
        return tokens

    async def begin_totp_enrollment(self, password: str) -> auth_service_pb2.TotpEnrollment:
        """A new pending TOTP secret and its otpauth:// URI (the password is needed); confirm it with a first code."""
        request = auth_service_pb2.BeginTotpEnrollmentRequest(password=password)
        return await self._unary(self._auth.BeginTotpEnrollment, request, session=True)

    async def confirm_totp_enrollment(self, code: str) -> auth_service_pb2.ConfirmTotpEnrollmentResponse:
        """Turn two-factor login on; the answer's recovery codes are shown only this once."""
        return await self._unary(self._auth.ConfirmTotpEnrollment,
                                auth_service_pb2.ConfirmTotpEnrollmentRequest(code=code), session=True)

    async def disable_totp(self, password: str, *, code: str = "", recovery_code: str = ""
                     ) -> auth_service_pb2.DisableTotpResponse:
        request = auth_service_pb2.DisableTotpRequest(password=password, code=code, recovery_code=recovery_code)
        return await self._unary(self._auth.DisableTotp, request, session=True)

    # -- API keys (a session is needed) ----------------------------------------------

    async def create_api_key(self, name: str, *, expire_time: datetime | None = None, scopes: Sequence[str] = ()
                       ) -> api_key_service_pb2.CreateApiKeyResponse:
        """A new key; ``scopes`` limit what it may do (``read``, ``bots:write``...), none means ``full``."""
        request = requests.create_api_key(name, expire_time, scopes)
        return await self._unary(self._keys.CreateApiKey, request, session=True)

    async def list_api_keys(self, *, page_size: int = 0, page_token: str = "") -> api_key_service_pb2.ListApiKeysResponse:
        request = api_key_service_pb2.ListApiKeysRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._keys.ListApiKeys, request, session=True)

    def iter_api_keys(self) -> AsyncIterator[api_key_pb2.ApiKey]:
        return self._pages(lambda token: self.list_api_keys(page_token=token), "api_keys")

    async def revoke_api_key(self, key_id: str) -> api_key_pb2.ApiKey:
        request = api_key_service_pb2.RevokeApiKeyRequest(id=key_id)
        return await self._unary(self._keys.RevokeApiKey, request, session=True)

    # -- audit trail ------------------------------------------------------------------

    async def list_audit_events(self, *, type: str = "", since: datetime | None = None,
                                until: datetime | None = None, page_size: int = 0, page_token: str = ""
                                ) -> auth_service_pb2.ListAuditEventsResponse:
        """The caller's own audit trail (as actor or account concerned), newest first."""
        request = requests.list_audit_events(type, since, until, page_size, page_token)
        return await self._unary(self._auth.ListAuditEvents, request)

    def iter_audit_events(self, *, type: str = "", since: datetime | None = None, until: datetime | None = None
                          ) -> AsyncIterator[audit_event_pb2.AuditEvent]:
        return self._pages(lambda token: self.list_audit_events(type=type, since=since, until=until,
                                                                page_token=token), "audit_events")

    async def list_all_audit_events(self, *, user_id: str = "", type: str = "", since: datetime | None = None,
                                    until: datetime | None = None, page_size: int = 0, page_token: str = ""
                                    ) -> auth_service_pb2.ListAuditEventsResponse:
        """Every user's audit trail, or one user's (``user_id``); for an admin's session only."""
        request = requests.list_audit_events(type, since, until, page_size, page_token, user_id=user_id)
        return await self._unary(self._admin.ListAuditEvents, request, session=True)

    def iter_all_audit_events(self, *, user_id: str = "", type: str = "", since: datetime | None = None,
                              until: datetime | None = None) -> AsyncIterator[audit_event_pb2.AuditEvent]:
        return self._pages(lambda token: self.list_all_audit_events(
            user_id=user_id, type=type, since=since, until=until, page_token=token), "audit_events")

    # -- passwords and email (ChangePassword and RequestEmailVerification need a session) --------

    async def change_password(self, current_password: str, new_password: str) -> auth_service_pb2.ChangePasswordResponse:
        """Needs the current password; every *other* session ends (``sessions_revoked`` says how many)."""
        request = auth_service_pb2.ChangePasswordRequest(current_password=current_password, new_password=new_password)
        return await self._unary(self._auth.ChangePassword, request, session=True)

    async def request_password_reset(self, email: str) -> None:
        """Mails a reset token if the address has an active account (the answer never says whether)."""
        await self._unary(self._auth.RequestPasswordReset, auth_service_pb2.RequestPasswordResetRequest(email=email))

    async def reset_password(self, token: str, new_password: str) -> None:
        """Sets the password with a mailed token (single use); every session of the account ends."""
        request = auth_service_pb2.ResetPasswordRequest(token=token, new_password=new_password)
        await self._unary(self._auth.ResetPassword, request)

    async def request_email_verification(self) -> None:
        request = auth_service_pb2.RequestEmailVerificationRequest()
        await self._unary(self._auth.RequestEmailVerification, request, session=True)

    async def verify_email(self, token: str) -> user_pb2.User:
        return await self._unary(self._auth.VerifyEmail, auth_service_pb2.VerifyEmailRequest(token=token))

    async def delete_account(self, password: str, *, code: str = "", recovery_code: str = ""
                       ) -> auth_service_pb2.DeleteAccountResponse:
        """Deletes the account for good (docs/accounts.md says what goes); the client forgets its session.
        With two-factor login on, a current ``code`` (or a ``recovery_code``) is needed too."""
        request = auth_service_pb2.DeleteAccountRequest(password=password, code=code, recovery_code=recovery_code)
        done = await self._unary(self._auth.DeleteAccount, request, session=True)
        self.credentials.forget_session()
        self.credentials.api_key = None
        return done

    # -- sessions (a session is needed) -------------------------------------------------

    async def list_sessions(self, *, page_size: int = 0, page_token: str = "") -> auth_service_pb2.ListSessionsResponse:
        request = auth_service_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._auth.ListSessions, request, session=True)

    def iter_sessions(self) -> AsyncIterator[auth_service_pb2.Session]:
        return self._pages(lambda token: self.list_sessions(page_token=token), "sessions")

    async def revoke_session(self, session_id: str) -> None:
        await self._unary(self._auth.RevokeSession, auth_service_pb2.RevokeSessionRequest(id=session_id), session=True)

    async def logout_everywhere(self, *, keep_current: bool = False) -> auth_service_pb2.LogoutEverywhereResponse:
        """Ends every session of the account (or all but this one); API keys keep working."""
        request = auth_service_pb2.LogoutEverywhereRequest(keep_current=keep_current)
        response = await self._unary(self._auth.LogoutEverywhere, request, session=True)
        if not keep_current:
            self.credentials.forget_session()
        return response

    # -- administration (an admin's session is needed) ----------------------------------------

    async def list_users(self, *, query: str = "", state: int = 0, role: int = 0, page_size: int = 0,
                   page_token: str = "") -> admin_service_pb2.ListUsersResponse:
        request = requests.list_users(query, state, role, page_size, page_token)
        return await self._unary(self._admin.ListUsers, request, session=True)

    def iter_users(self, *, query: str = "", state: int = 0, role: int = 0) -> AsyncIterator[user_pb2.User]:
        return self._pages(lambda token: self.list_users(query=query, state=state, role=role, page_token=token),
                           "users")

    async def get_user(self, user_id: str) -> user_pb2.User:
        return await self._unary(self._admin.GetUser, admin_service_pb2.GetUserRequest(id=user_id), session=True)

    async def disable_user(self, user_id: str) -> user_pb2.User:
        return await self._unary(self._admin.DisableUser, admin_service_pb2.DisableUserRequest(id=user_id), session=True)

    async def enable_user(self, user_id: str) -> user_pb2.User:
        return await self._unary(self._admin.EnableUser, admin_service_pb2.EnableUserRequest(id=user_id), session=True)

    async def force_password_reset(self, user_id: str) -> admin_service_pb2.ForcePasswordResetResponse:
        request = admin_service_pb2.ForcePasswordResetRequest(id=user_id)
        return await self._unary(self._admin.ForcePasswordReset, request, session=True)

    async def reset_two_factor(self, user_id: str) -> admin_service_pb2.ResetTwoFactorResponse:
        """Two-factor login off for an owner who lost every factor; every session of the account ends."""
        request = admin_service_pb2.ResetTwoFactorRequest(id=user_id)
        return await self._unary(self._admin.ResetTwoFactor, request, session=True)

    async def set_user_role(self, user_id: str, role: int) -> user_pb2.User:
        request = admin_service_pb2.SetUserRoleRequest(id=user_id, role=role)  # type: ignore[arg-type]
        return await self._unary(self._admin.SetUserRole, request, session=True)

    async def list_custom_bot_review_queue(self, *, page_size: int = 0, page_token: str = ""
                                     ) -> custom_bot_service_pb2.ListCustomBotReviewQueueResponse:
        """Versions of every user awaiting human review, oldest first."""
        request = custom_bot_service_pb2.ListCustomBotReviewQueueRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._custom_bots.ListCustomBotReviewQueue, request, session=True)

    def iter_custom_bot_review_queue(self) -> AsyncIterator[custom_bot_pb2.CustomBot]:
        return self._pages(lambda token: self.list_custom_bot_review_queue(page_token=token), "custom_bots")

    # -- custom bots ----------------------------------------------------------------

    async def upload_custom_bot(self, archive: Path | bytes, *, progress: ProgressCallback | None = None
                          ) -> custom_bot_pb2.CustomBot:
        """Stream a zip in 1 MiB chunks; ``progress(n)`` hears of each chunk sent. Returns the new version."""
        if isinstance(archive, Path) and not archive.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such file", str(archive))
        return await self._unary(self._custom_bots.UploadCustomBot, lambda: requests.upload_chunks(archive, progress),
                           timeout=UPLOAD_TIMEOUT_SECONDS)

    async def list_custom_bots(self, *, name: str = "", page_size: int = 0, page_token: str = ""
                         ) -> custom_bot_service_pb2.ListCustomBotsResponse:
        request = custom_bot_service_pb2.ListCustomBotsRequest(name=name, page_size=page_size, page_token=page_token)
        return await self._unary(self._custom_bots.ListCustomBots, request)

    def iter_custom_bots(self, *, name: str = "") -> AsyncIterator[custom_bot_pb2.CustomBot]:
        return self._pages(lambda token: self.list_custom_bots(name=name, page_token=token), "custom_bots")

    async def get_custom_bot(self, custom_bot_id: str) -> custom_bot_pb2.CustomBot:
        request = custom_bot_service_pb2.GetCustomBotRequest(id=custom_bot_id)
        return await self._unary(self._custom_bots.GetCustomBot, request)

    def download_custom_bot_archive(self, custom_bot_id: str) -> AsyncIterator[bytes]:
        """The zip's bytes in chunks, as they arrive (only the owner may download)."""
        request = custom_bot_service_pb2.DownloadCustomBotArchiveRequest(id=custom_bot_id)
        return _data(self._stream(self._custom_bots.DownloadCustomBotArchive, request))

    async def review_custom_bot(self, custom_bot_id: str, *, approve: bool, reasons: Iterable[str] = ()
                          ) -> custom_bot_pb2.CustomBot:
        """Admins: approve or decline a version awaiting human review."""
        request = requests.review_custom_bot(custom_bot_id, approve, reasons)
        return await self._unary(self._custom_bots.ReviewCustomBot, request)

    def watch_custom_bot(self, custom_bot_id: str) -> AsyncIterator[custom_bot_service_pb2.WatchCustomBotResponse]:
        request = custom_bot_service_pb2.WatchCustomBotRequest(id=custom_bot_id)
        return self._watch(self._custom_bots.WatchCustomBot, request)

    # -- bots ---------------------------------------------------------------------

    async def create_bot(self, name: str, config: dict[str, Any], *, request_id: str | None = None) -> bot_pb2.Bot:
        return await self._unary(self._bots.CreateBot, requests.create_bot(name, config, request_id))

    async def list_bots(self, *, state: int = 0, page_size: int = 0, page_token: str = ""
                  ) -> bot_service_pb2.ListBotsResponse:
        return await self._unary(self._bots.ListBots, requests.list_bots(page_size, page_token, state))

    def iter_bots(self, *, state: int = 0) -> AsyncIterator[bot_pb2.Bot]:
        return self._pages(lambda token: self.list_bots(state=state, page_token=token), "bots")

    async def get_bot(self, bot_id: str) -> bot_pb2.Bot:
        return await self._unary(self._bots.GetBot, bot_service_pb2.GetBotRequest(id=bot_id))

    async def update_bot(self, bot_id: str, *, name: str | None = None, config: dict[str, Any] | None = None,
                   etag: str = "", replace: bool = False) -> bot_pb2.Bot:
        """Change the name and/or config (PATCH), or the whole bot (``replace``, PUT); a stale ``etag`` is ABORTED."""
        request = requests.update_bot(bot_id, name=name, config=config, etag=etag, replace=replace)
        return await self._unary(self._bots.UpdateBot, request)

    async def delete_bot(self, bot_id: str, *, etag: str = "") -> None:
        await self._unary(self._bots.DeleteBot, bot_service_pb2.DeleteBotRequest(id=bot_id, etag=etag))

    async def deploy_bot(self, bot_id: str, *, request_id: str | None = None) -> bot_pb2.Bot:
        request = bot_service_pb2.DeployBotRequest(id=bot_id, request_id=request_id or new_request_id())
        return await self._unary(self._bots.DeployBot, request)

    async def stop_bot(self, bot_id: str) -> bot_pb2.Bot:
        return await self._unary(self._bots.StopBot, bot_service_pb2.StopBotRequest(id=bot_id))

    def watch_bot(self, bot_id: str) -> AsyncIterator[bot_service_pb2.WatchBotResponse]:
        return self._watch(self._bots.WatchBot, bot_service_pb2.WatchBotRequest(id=bot_id))

    async def list_bot_executions(self, bot_id: str, *, page_size: int = 0, page_token: str = ""
                            ) -> bot_service_pb2.ListBotExecutionsResponse:
        request = bot_service_pb2.ListBotExecutionsRequest(id=bot_id, page_size=page_size, page_token=page_token)
        return await self._unary(self._bots.ListBotExecutions, request)

    def iter_bot_executions(self, bot_id: str) -> AsyncIterator[bot_pb2.BotExecution]:
        """Newest first, every page (the server keeps a bounded history per bot)."""
        return self._pages(lambda token: self.list_bot_executions(bot_id, page_token=token), "executions")

    async def list_bot_logs(self, bot_id: str, *, since: datetime | None = None, until: datetime | None = None,
                      page_size: int = 0, page_token: str = "") -> bot_service_pb2.ListBotLogsResponse:
        request = requests.list_bot_logs(bot_id, since, until, page_size, page_token)
        return await self._unary(self._bots.ListBotLogs, request)

    def iter_bot_logs(self, bot_id: str, *, since: datetime | None = None, until: datetime | None = None
                      ) -> AsyncIterator[bot_service_pb2.BotLogLine]:
        """Oldest first over [since, until), every page."""
        return self._pages(lambda token: self.list_bot_logs(bot_id, since=since, until=until, page_token=token),
                           "lines")

    def stream_bot_logs(self, bot_id: str, *, tail_lines: int = 0, after_cursor: str = ""
                        ) -> AsyncIterator[bot_service_pb2.StreamBotLogsResponse]:
        """The last ``tail_lines`` lines (or every line after ``after_cursor``), then each new one."""
        request = bot_service_pb2.StreamBotLogsRequest(id=bot_id, tail_lines=tail_lines, after_cursor=after_cursor)
        return self._stream(self._bots.StreamBotLogs, request)

    # -- backtests -----------------------------------------------------------------

    async def create_backtest(self, name: str, config: dict[str, Any], *, request_id: str | None = None
                        ) -> backtest_pb2.Backtest:
        return await self._unary(self._backtests.CreateBacktest, requests.create_backtest(name, config, request_id))

    async def list_backtests(self, *, state: int = 0, page_size: int = 0, page_token: str = ""
                       ) -> backtest_service_pb2.ListBacktestsResponse:
        return await self._unary(self._backtests.ListBacktests, requests.list_backtests(page_size, page_token, state))

    def iter_backtests(self, *, state: int = 0) -> AsyncIterator[backtest_pb2.Backtest]:
        return self._pages(lambda token: self.list_backtests(state=state, page_token=token), "backtests")

    async def get_backtest(self, backtest_id: str) -> backtest_pb2.Backtest:
        return await self._unary(self._backtests.GetBacktest, backtest_service_pb2.GetBacktestRequest(id=backtest_id))

    async def backtest_results(self, backtest_id: str) -> bytes:
        """``analysis.json`` of a completed backtest (metrics, plots, tables), as bytes."""
        request = backtest_service_pb2.GetBacktestResultsRequest(id=backtest_id)
        return b"".join([data async for data in _data(self._stream(self._backtests.GetBacktestResults, request))])

    async def backtest_logs(self, backtest_id: str) -> bytes:
        request = backtest_service_pb2.GetBacktestLogsRequest(id=backtest_id)
        return b"".join([data async for data in _data(self._stream(self._backtests.GetBacktestLogs, request))])

    async def cancel_backtest(self, backtest_id: str) -> backtest_pb2.Backtest:
        request = backtest_service_pb2.CancelBacktestRequest(id=backtest_id)
        return await self._unary(self._backtests.CancelBacktest, request)

    def watch_backtest(self, backtest_id: str) -> AsyncIterator[backtest_service_pb2.WatchBacktestResponse]:
        request = backtest_service_pb2.WatchBacktestRequest(id=backtest_id)
        return self._watch(self._backtests.WatchBacktest, request)



async def _data(bodies: AsyncIterator[httpbody_pb2.HttpBody]) -> AsyncIterator[bytes]:
    async for body in bodies:
        yield body.data
