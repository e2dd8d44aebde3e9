"""AdminService over gRPC: proto ↔ domain conversion and one AdminService call per RPC."""

from __future__ import annotations

from typing import Any

import grpc.aio

from the0.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, user_pb2
from the0.server.identity.admin import AdminService
from the0.server.identity.principal import Role, current_principal
from the0.server.identity.servicers import audit_event_to_proto, optional_time, user_to_proto
from the0.server.validation import validate_request

_ROLES: dict[int, Role] = {user_pb2.ROLE_USER: "user", user_pb2.ROLE_ADMIN: "admin"}
_STATE_FILTERS: dict[int, bool | None] = {
    admin_service_pb2.USER_STATE_FILTER_UNSPECIFIED: None,
    admin_service_pb2.USER_STATE_FILTER_ACTIVE: True,
    admin_service_pb2.USER_STATE_FILTER_DISABLED: False,
}
Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, service: AdminService) -> None:
        self._service = service

    async def ListUsers(
        self, request: admin_service_pb2.ListUsersRequest, context: Context
    ) -> admin_service_pb2.ListUsersResponse:
        validate_request(request)
        page = await self._service.list_users(
            current_principal(), requested_page_size=request.page_size, page_token=request.page_token,
            query=request.query, active=_STATE_FILTERS.get(request.state), role=_ROLES.get(request.role),
        )
        return admin_service_pb2.ListUsersResponse(users=[user_to_proto(u) for u in page.users],
                                                   next_page_token=page.next_page_token)

    async def GetUser(self, request: admin_service_pb2.GetUserRequest, context: Context) -> user_pb2.User:
        validate_request(request)
        return user_to_proto(await self._service.get_user(current_principal(), request.id))

    async def DisableUser(self, request: admin_service_pb2.DisableUserRequest, context: Context) -> user_pb2.User:
        validate_request(request)
        return user_to_proto(await self._service.disable_user(current_principal(), request.id))

    async def EnableUser(self, request: admin_service_pb2.EnableUserRequest, context: Context) -> user_pb2.User:
        validate_request(request)
        return user_to_proto(await self._service.enable_user(current_principal(), request.id))

    async def ForcePasswordReset(
        self, request: admin_service_pb2.ForcePasswordResetRequest, context: Context
    ) -> admin_service_pb2.ForcePasswordResetResponse:
        validate_request(request)
        user, ended = await self._service.force_password_reset(current_principal(), request.id)
        return admin_service_pb2.ForcePasswordResetResponse(user=user_to_proto(user), sessions_revoked=ended)

    async def ResetTwoFactor(
        self, request: admin_service_pb2.ResetTwoFactorRequest, context: Context
    ) -> admin_service_pb2.ResetTwoFactorResponse:
        validate_request(request)
        user, ended = await self._service.reset_two_factor(current_principal(), request.id)
        return admin_service_pb2.ResetTwoFactorResponse(user=user_to_proto(user), sessions_revoked=ended)

    async def SetUserRole(self, request: admin_service_pb2.SetUserRoleRequest, context: Context) -> user_pb2.User:
        validate_request(request)
        return user_to_proto(await self._service.set_role(current_principal(), request.id, _ROLES.get(request.role)))

    async def ListAuditEvents(
        self, request: admin_service_pb2.ListAuditEventsRequest, context: Context
    ) -> auth_service_pb2.ListAuditEventsResponse:
        validate_request(request)
        page = await self._service.list_audit_events(
            current_principal(), type=request.type, since=optional_time(request, "since"),
            until=optional_time(request, "until"), user_id=request.user_id,
            requested_page_size=request.page_size, page_token=request.page_token)
        return auth_service_pb2.ListAuditEventsResponse(audit_events=[audit_event_to_proto(e) for e in page.events],
                                                        next_page_token=page.next_page_token)
