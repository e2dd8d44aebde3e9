"""gRPC servicers: proto ↔ domain conversion and one service call per RPC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc.aio

from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import audit_event_pb2, auth_service_pb2, auth_service_pb2_grpc, user_pb2
from the0.server.audit.service import AuditEvent
from the0.server.client_address import address_from, user_agent_from
from the0.server.identity.deletion import AccountDeletion
from the0.server.identity.domain import ApiKey, IssuedTokens, SessionInfo, User
from the0.server.identity.principal import current_principal
from the0.server.identity.recovery import AccountRecovery
from the0.server.identity.service import ApiKeyService, AuthService, Registration
from the0.server.identity.two_factor import SecondFactor, SecondFactorChallenge, TwoFactor
from the0.server.proto_values import to_struct
from the0.server.proto_values import to_timestamp as _timestamp
from the0.server.settings import IPNetwork
from the0.server.validation import clear_output_only, validate_request

_ROLES = {"user": user_pb2.ROLE_USER, "admin": user_pb2.ROLE_ADMIN}
_KEY_STATES = {
    "active": api_key_pb2.API_KEY_STATE_ACTIVE,
    "revoked": api_key_pb2.API_KEY_STATE_REVOKED,
    "expired": api_key_pb2.API_KEY_STATE_EXPIRED,
}


def user_to_proto(user: User) -> user_pb2.User:
    message = user_pb2.User(
        id=user.id, email=user.email, username=user.username, first_name=user.first_name,
        last_name=user.last_name, role=_ROLES[user.role], active=user.active,
        create_time=_timestamp(user.created_at), update_time=_timestamp(user.updated_at),
        password_reset_required=user.password_reset_required, email_verified=user.email_verified,
        two_factor_enabled=user.two_factor_enabled,
    )
    if user.last_login_at is not None:
        message.last_login_time.CopyFrom(_timestamp(user.last_login_at))
    return message


def tokens_to_proto(tokens: IssuedTokens) -> auth_service_pb2.AuthTokens:
    return auth_service_pb2.AuthTokens(
        user=user_to_proto(tokens.user),
        access_token=tokens.access_token,
        access_token_expire_time=_timestamp(tokens.access_token_expires_at),
        refresh_token=tokens.refresh_token,
        refresh_token_expire_time=_timestamp(tokens.refresh_token_expires_at),
        token_type="Bearer",
    )


_METHODS = {"totp": auth_service_pb2.SECOND_FACTOR_METHOD_TOTP,
            "recovery_code": auth_service_pb2.SECOND_FACTOR_METHOD_RECOVERY_CODE}


def challenge_to_proto(challenge: SecondFactorChallenge) -> auth_service_pb2.AuthTokens:
    """Login's answer when a second factor is needed: no tokens, no profile, only the challenge."""
    return auth_service_pb2.AuthTokens(second_factor=auth_service_pb2.SecondFactorChallenge(
        challenge_token=challenge.challenge_token, expire_time=_timestamp(challenge.expires_at),
        methods=[_METHODS[m] for m in challenge.methods]))


def session_to_proto(session: SessionInfo) -> auth_service_pb2.Session:
    return auth_service_pb2.Session(
        id=session.id, user_agent=session.user_agent, client_address=session.client_address,
        create_time=_timestamp(session.created_at), last_use_time=_timestamp(session.last_used_at),
        current=session.current,
    )


_ACTOR_KINDS = {
    None: audit_event_pb2.AUDIT_ACTOR_KIND_ANONYMOUS,
    "user": audit_event_pb2.AUDIT_ACTOR_KIND_USER,
    "service_account": audit_event_pb2.AUDIT_ACTOR_KIND_SERVICE_ACCOUNT,
}


def audit_event_to_proto(event: AuditEvent) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        id=event.id, time=_timestamp(event.time), type=event.type, actor_id=event.actor_id or "",
        actor_kind=_ACTOR_KINDS.get(event.actor_kind, audit_event_pb2.AUDIT_ACTOR_KIND_UNSPECIFIED),
        subject_user_id=event.subject_user_id or "", client_address=event.client_address,
        user_agent=event.user_agent, details=to_struct(event.details), request_id=event.request_id,
    )


def optional_time(message: Any, field: str) -> datetime | None:
    return getattr(message, field).ToDatetime(tzinfo=UTC) if message.HasField(field) else None


def user_agent(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's user agent as sent (Envoy passes the browser's), for ListSessions."""
    return user_agent_from(context.invocation_metadata() or ())


def api_key_to_proto(key: ApiKey) -> api_key_pb2.ApiKey:
    message = api_key_pb2.ApiKey(
        id=key.id, name=key.name, prefix=key.prefix, state=_KEY_STATES[key.state],
        create_time=_timestamp(key.created_at), scopes=key.scopes,
    )
    for field, value in (("expire_time", key.expires_at), ("last_used_time", key.last_used_at),
                         ("revoke_time", key.revoked_at)):
        if value is not None:
            getattr(message, field).CopyFrom(_timestamp(value))
    return message


def client_address(context: grpc.aio.ServicerContext[Any, Any], trusted_proxies: Sequence[IPNetwork]) -> str:
    """The caller's IP, for per-address limits (client_address.address_from says how it is read)."""
    return address_from(context.peer() or "", context.invocation_metadata() or (), trusted_proxies)


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, service: AuthService, recovery: AccountRecovery, two_factor: TwoFactor,
                 deletion: AccountDeletion, *,
                 trusted_proxies: Sequence[IPNetwork]) -> None:
        self._two_factor = two_factor
        self._service = service
        self._recovery = recovery
        self._deletion = deletion
        self._trusted_proxies = tuple(trusted_proxies)

    async def Register(
        self,
        request: auth_service_pb2.RegisterRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.RegisterRequest, auth_service_pb2.AuthTokens],
    ) -> auth_service_pb2.AuthTokens:
        clear_output_only(request)
        tokens = await self._service.register(
            Registration(email=request.email, password=request.password, username=request.username,
                         first_name=request.first_name, last_name=request.last_name),
            client_address=client_address(context, self._trusted_proxies), user_agent=user_agent(context),
        )
        return tokens_to_proto(tokens)

    async def Login(
        self,
        request: auth_service_pb2.LoginRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.LoginRequest, auth_service_pb2.AuthTokens],
    ) -> auth_service_pb2.AuthTokens:
        validate_request(request)
        answer = await self._service.login(request.email, request.password,
                                           client_address=client_address(context, self._trusted_proxies),
                                           user_agent=user_agent(context))
        if isinstance(answer, SecondFactorChallenge):
            return challenge_to_proto(answer)
        return tokens_to_proto(answer)

    async def CompleteLogin(
        self,
        request: auth_service_pb2.CompleteLoginRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.CompleteLoginRequest, auth_service_pb2.AuthTokens],
    ) -> auth_service_pb2.AuthTokens:
        validate_request(request)
        tokens = await self._service.complete_login(
            request.challenge_token, SecondFactor(code=request.code, recovery_code=request.recovery_code),
            client_address=client_address(context, self._trusted_proxies), user_agent=user_agent(context))
        return tokens_to_proto(tokens)

    async def BeginTotpEnrollment(
        self,
        request: auth_service_pb2.BeginTotpEnrollmentRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.BeginTotpEnrollmentRequest, auth_service_pb2.TotpEnrollment],
    ) -> auth_service_pb2.TotpEnrollment:
        validate_request(request)
        enrollment = await self._two_factor.begin_enrollment(
            current_principal(), request.password, client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.TotpEnrollment(secret=enrollment.secret,
                                               provisioning_uri=enrollment.provisioning_uri)

    async def ConfirmTotpEnrollment(
        self,
        request: auth_service_pb2.ConfirmTotpEnrollmentRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.ConfirmTotpEnrollmentRequest, auth_service_pb2.ConfirmTotpEnrollmentResponse],
    ) -> auth_service_pb2.ConfirmTotpEnrollmentResponse:
        validate_request(request)
        codes = await self._two_factor.confirm_enrollment(
            current_principal(), request.code, client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.ConfirmTotpEnrollmentResponse(recovery_codes=codes)

    async def DisableTotp(
        self,
        request: auth_service_pb2.DisableTotpRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.DisableTotpRequest, auth_service_pb2.DisableTotpResponse],
    ) -> auth_service_pb2.DisableTotpResponse:
        validate_request(request)
        await self._two_factor.disable(
            current_principal(), request.password,
            SecondFactor(code=request.code, recovery_code=request.recovery_code),
            client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.DisableTotpResponse()

    async def RefreshToken(
        self,
        request: auth_service_pb2.RefreshTokenRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.RefreshTokenRequest, auth_service_pb2.AuthTokens],
    ) -> auth_service_pb2.AuthTokens:
        validate_request(request)
        return tokens_to_proto(await self._service.refresh(request.refresh_token))

    async def Logout(
        self,
        request: auth_service_pb2.LogoutRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.LogoutRequest, auth_service_pb2.LogoutResponse],
    ) -> auth_service_pb2.LogoutResponse:
        await self._service.logout(current_principal())
        return auth_service_pb2.LogoutResponse()

    async def ListSessions(
        self,
        request: auth_service_pb2.ListSessionsRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.ListSessionsRequest, auth_service_pb2.ListSessionsResponse],
    ) -> auth_service_pb2.ListSessionsResponse:
        validate_request(request)
        page = await self._service.list_sessions(current_principal(), requested_page_size=request.page_size,
                                                 page_token=request.page_token)
        return auth_service_pb2.ListSessionsResponse(sessions=[session_to_proto(s) for s in page.sessions],
                                                     next_page_token=page.next_page_token)

    async def RevokeSession(
        self,
        request: auth_service_pb2.RevokeSessionRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.RevokeSessionRequest, auth_service_pb2.RevokeSessionResponse],
    ) -> auth_service_pb2.RevokeSessionResponse:
        validate_request(request)
        await self._service.revoke_session(current_principal(), request.id)
        return auth_service_pb2.RevokeSessionResponse()

    async def LogoutEverywhere(
        self,
        request: auth_service_pb2.LogoutEverywhereRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.LogoutEverywhereRequest, auth_service_pb2.LogoutEverywhereResponse],
    ) -> auth_service_pb2.LogoutEverywhereResponse:
        ended = await self._service.logout_everywhere(current_principal(), keep_current=request.keep_current)
        return auth_service_pb2.LogoutEverywhereResponse(sessions_revoked=ended)

    async def ChangePassword(
        self,
        request: auth_service_pb2.ChangePasswordRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.ChangePasswordRequest, auth_service_pb2.ChangePasswordResponse],
    ) -> auth_service_pb2.ChangePasswordResponse:
        clear_output_only(request)  # the service reports every bad field at once
        ended = await self._recovery.change_password(
            current_principal(), request.current_password, request.new_password,
            client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.ChangePasswordResponse(sessions_revoked=ended)

    async def RequestPasswordReset(
        self,
        request: auth_service_pb2.RequestPasswordResetRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.RequestPasswordResetRequest, auth_service_pb2.RequestPasswordResetResponse],
    ) -> auth_service_pb2.RequestPasswordResetResponse:
        validate_request(request)
        await self._recovery.request_password_reset(request.email,
                                                    client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self,
        request: auth_service_pb2.ResetPasswordRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.ResetPasswordRequest, auth_service_pb2.ResetPasswordResponse],
    ) -> auth_service_pb2.ResetPasswordResponse:
        clear_output_only(request)
        await self._recovery.reset_password(request.token, request.new_password)
        return auth_service_pb2.ResetPasswordResponse()

    async def RequestEmailVerification(
        self,
        request: auth_service_pb2.RequestEmailVerificationRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.RequestEmailVerificationRequest, auth_service_pb2.RequestEmailVerificationResponse],
    ) -> auth_service_pb2.RequestEmailVerificationResponse:
        await self._recovery.request_email_verification(
            current_principal(), client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.RequestEmailVerificationResponse()

    async def VerifyEmail(
        self,
        request: auth_service_pb2.VerifyEmailRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.VerifyEmailRequest, user_pb2.User],
    ) -> user_pb2.User:
        validate_request(request)
        user = await self._recovery.verify_email(request.token)
        self._service.forget_profile(user.id)
        return user_to_proto(user)

    async def ListAuditEvents(
        self,
        request: auth_service_pb2.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.ListAuditEventsRequest, auth_service_pb2.ListAuditEventsResponse],
    ) -> auth_service_pb2.ListAuditEventsResponse:
        validate_request(request)
        page = await self._service.list_audit_events(
            current_principal(), type=request.type, since=optional_time(request, "since"),
            until=optional_time(request, "until"), requested_page_size=request.page_size,
            page_token=request.page_token)
        return auth_service_pb2.ListAuditEventsResponse(audit_events=[audit_event_to_proto(e) for e in page.events],
                                                        next_page_token=page.next_page_token)

    async def DeleteAccount(
        self,
        request: auth_service_pb2.DeleteAccountRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.DeleteAccountRequest, auth_service_pb2.DeleteAccountResponse],
    ) -> auth_service_pb2.DeleteAccountResponse:
        validate_request(request)
        done = await self._deletion.delete_account(
            current_principal(), request.password, SecondFactor(code=request.code, recovery_code=request.recovery_code),
            client_address=client_address(context, self._trusted_proxies))
        return auth_service_pb2.DeleteAccountResponse(
            bots_stopped=done["botsStopped"], bots_deleted=done["botsDeleted"],
            backtests_deleted=done["backtestsDeleted"], custom_bots_deleted=done["customBotsDeleted"],
            api_keys_revoked=done["apiKeysRevoked"], sessions_revoked=done["sessionsRevoked"])

    async def GetCurrentUser(
        self,
        request: auth_service_pb2.GetCurrentUserRequest,
        context: grpc.aio.ServicerContext[auth_service_pb2.GetCurrentUserRequest, user_pb2.User],
    ) -> user_pb2.User:
        return user_to_proto(await self._service.current_user(current_principal()))


class ApiKeyServicer(api_key_service_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, service: ApiKeyService) -> None:
        self._service = service

    async def CreateApiKey(
        self,
        request: api_key_service_pb2.CreateApiKeyRequest,
        context: grpc.aio.ServicerContext[api_key_service_pb2.CreateApiKeyRequest, api_key_service_pb2.CreateApiKeyResponse],
    ) -> api_key_service_pb2.CreateApiKeyResponse:
        clear_output_only(request)  # the service reports every bad field at once, name included
        expires = request.api_key.expire_time.ToDatetime(tzinfo=UTC) if request.api_key.HasField(
            "expire_time") else None
        created = await self._service.create(current_principal(), name=request.api_key.name, expires_at=expires,
                                             scopes=list(request.api_key.scopes))
        return api_key_service_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(created.api_key),
                                                        secret=created.secret)

    async def ListApiKeys(
        self,
        request: api_key_service_pb2.ListApiKeysRequest,
        context: grpc.aio.ServicerContext[api_key_service_pb2.ListApiKeysRequest, api_key_service_pb2.ListApiKeysResponse],
    ) -> api_key_service_pb2.ListApiKeysResponse:
        page = await self._service.list(current_principal(), requested_page_size=request.page_size,
                                        page_token=request.page_token)
        return api_key_service_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in page.api_keys], next_page_token=page.next_page_token
        )

    async def RevokeApiKey(
        self,
        request: api_key_service_pb2.RevokeApiKeyRequest,
        context: grpc.aio.ServicerContext[api_key_service_pb2.RevokeApiKeyRequest, api_key_pb2.ApiKey],
    ) -> api_key_pb2.ApiKey:
        validate_request(request)
        return api_key_to_proto(await self._service.revoke(current_principal(), request.id))

