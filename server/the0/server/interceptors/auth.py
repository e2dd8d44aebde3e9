"""Innermost interceptor: authenticate every RPC that is not public.

Which credentials an RPC accepts is declared in the proto with the method
option ``(the0.common.v1.auth_policy)`` and read here from the descriptors of
the registered services, once. A method missing from that map is denied.
Accepted credentials: ``authorization: Bearer <jwt>``, ``authorization: ApiKey
<key>`` or ``x-api-key: <key>``; the platform's internal RPCs (policies
``AUTH_POLICY_SERVICE_*``) accept only a service key of their role
(``x-service-key: <key>`` or ``authorization: Service <key>``), and a user's
credential there is PERMISSION_DENIED. ``AUTH_POLICY_ADMIN`` RPCs take only an
admin's session (JWT). An API key must also hold a scope that covers the RPC's
``(the0.common.v1.access)`` option (identity/scopes.py), or the call is
PERMISSION_DENIED with reason API_KEY_SCOPE; user sessions are not scoped.
The verified caller is set as a frozen
Principal in a ContextVar for the handler, and reset after the call.

Server streams outlive the moment they were authenticated, so each one is
guarded (``stream_guard.py``): it ends with UNAUTHENTICATED when its session is
logged out, its API key revoked (on any replica) or its credential expires.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Protocol

from google.protobuf.descriptor import ServiceDescriptor

from the0.common.v1 import access_pb2, auth_policy_pb2
from the0.server.errors import PermissionDenied, Unauthenticated
from the0.server.identity import scopes
from the0.server.identity.principal import Principal, ServiceRole, principal_var
from the0.server.interceptors.stream_guard import guard_stream
from the0.server.interceptors.wrapping import AnyContext, AnyHandler, WrappingInterceptor, wrap_handler
from the0.server.request_context import caller_id_var

PUBLIC = auth_policy_pb2.AUTH_POLICY_PUBLIC
USER_SESSION = auth_policy_pb2.AUTH_POLICY_USER_SESSION
ADMIN = auth_policy_pb2.AUTH_POLICY_ADMIN
# Policies that take only a user's session (JWT), never an API key.
SESSION_ONLY = (USER_SESSION, ADMIN)
ANY_CREDENTIAL = auth_policy_pb2.AUTH_POLICY_UNSPECIFIED
# The service-account role each internal policy requires.
SERVICE_POLICIES: dict[int, ServiceRole] = {
    auth_policy_pb2.AUTH_POLICY_SERVICE_RUNTIME: "runtime",
    auth_policy_pb2.AUTH_POLICY_SERVICE_ANALYZER: "analyzer",
}

# Services that are not ours, so carry no auth_policy option, and are public by
# nature: load balancers and Envoy probe health; reflection only describes the API.
PUBLIC_FOREIGN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


class Authenticates(Protocol):
    def authenticate_jwt(self, token: str) -> Principal: ...

    async def authenticate_api_key(self, secret: str) -> Principal: ...

    def revocation_signal(self, principal: Principal) -> AbstractContextManager[asyncio.Event]: ...


class AuthenticatesServices(Protocol):
    async def authenticate_service_key(self, key: str) -> Principal: ...


def policies_from_services(
    services: Iterable[ServiceDescriptor], public_services: Iterable[str] = PUBLIC_FOREIGN_SERVICES
) -> dict[str, int]:
    """``{"/pkg.Service/Method": AuthPolicy}`` for every method of ``services``."""
    policies: dict[str, int] = {}
    for service in services:
        for method in service.methods:
            policies[f"/{service.full_name}/{method.name}"] = method.GetOptions().Extensions[
                auth_policy_pb2.auth_policy
            ]
    return policies | {f"/{name}/": PUBLIC for name in public_services}


def access_from_services(services: Iterable[ServiceDescriptor]) -> dict[str, scopes.Access]:
    """``{"/pkg.Service/Method": Access}`` for every method of ``services`` that declares its access."""
    declared: dict[str, scopes.Access] = {}
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(access_pb2.access):
                declared[f"/{service.full_name}/{method.name}"] = scopes.Access.from_proto(
                    options.Extensions[access_pb2.access])
    return declared


class AuthInterceptor(WrappingInterceptor):
    def __init__(
        self,
        policies: Mapping[str, int],
        authenticator: Authenticates,
        service_keys: AuthenticatesServices | None = None,
        access: Mapping[str, scopes.Access] | None = None,
    ) -> None:
        super().__init__()
        # What each RPC reads or writes, for API keys' scopes; an RPC missing here is open to
        # `full` keys only (a unit test keeps every key-accepting RPC of ours declared).
        self._access = dict(access or {})
        self._service_keys = service_keys
        self._policies = dict(policies)
        self._public_prefixes = tuple(m for m, p in self._policies.items() if m.endswith("/") and p == PUBLIC)
        self._authenticator = authenticator

    def declare(self, method: str, policy: int) -> None:
        """Add a method no proto describes (a benchmark's echo). Before the server starts."""
        self._policies[method] = policy

    def rewrite(self, handler: AnyHandler, method: str) -> AnyHandler:
        if self.policy(method) not in (PUBLIC, None):
            handler = guard_stream(handler, method, self._authenticator.revocation_signal)
        return wrap_handler(handler, method, self.around)

    def policy(self, method: str) -> int | None:
        policy = self._policies.get(method)
        if policy is None and method.startswith(self._public_prefixes):
            return PUBLIC
        return policy

    @asynccontextmanager
    async def around(self, method: str, context: AnyContext) -> AsyncIterator[None]:
        policy = self.policy(method)
        if policy == PUBLIC:
            yield
            return
        if policy is None:
            raise PermissionDenied(f"{method} is not part of this API", metadata={"method": method})
        required_role = SERVICE_POLICIES.get(policy)
        if required_role is not None:
            principal = await self._authenticate_service(context, method, required_role)
        else:
            principal = await self._authenticate(context)
        if policy in SESSION_ONLY and principal.auth_kind != "jwt":
            raise PermissionDenied("this call needs a user session (JWT); API keys are not accepted",
                                   reason="API_KEY_NOT_ALLOWED", metadata={"method": method})
        if policy == ADMIN and not principal.is_admin:
            raise PermissionDenied("this call is for administrators only", metadata={"method": method})
        if principal.auth_kind == "api_key":
            self._check_scope(method, principal.api_key_scopes)
        token = principal_var.set(principal)
        caller = caller_id_var.set(principal.user_id)
        try:
            yield
        finally:
            caller_id_var.reset(caller)
            principal_var.reset(token)

    def _check_scope(self, method: str, key_scopes: tuple[str, ...]) -> None:
        if scopes.FULL in key_scopes:
            return
        access = self._access.get(method)
        if access is not None and scopes.allows(key_scopes, access):
            return
        needed = access.scope if access is not None else scopes.FULL
        held = " ".join(key_scopes)
        raise PermissionDenied(
            f"this API key's scopes ({held}) do not allow {method.rsplit('/', 1)[-1]}: it needs scope {needed}",
            reason="API_KEY_SCOPE", metadata={"method": method, "requiredScope": needed, "keyScopes": held})

    async def _authenticate_service(self, context: AnyContext, method: str, role: ServiceRole) -> Principal:
        """A service account of ``role``; anything else, a user's credential included, is refused."""
        service_key = user_credential = None
        for key, value in context.invocation_metadata() or ():
            if not isinstance(value, str):
                continue
            if key == "x-service-key":
                service_key = value.strip()
            elif key == "authorization":
                scheme, _, credential = value.strip().partition(" ")
                if scheme.lower() == "service":
                    service_key = credential.strip()
                else:
                    user_credential = value
            elif key == "x-api-key":
                user_credential = value
        if not service_key:
            if user_credential:
                raise PermissionDenied("this call is for platform service accounts only",
                                       metadata={"method": method})
            raise Unauthenticated("this call needs a service key: x-service-key or authorization: Service <key>",
                                  reason="TOKEN_MISSING")
        if self._service_keys is None:  # a server built without the platform API
            raise PermissionDenied(f"{method} is not part of this API", metadata={"method": method})
        principal = await self._service_keys.authenticate_service_key(service_key)
        if principal.service_role != role:
            raise PermissionDenied(f"this call needs a service account of role {role}",
                                   metadata={"method": method, "requiredRole": role})
        return principal

    async def _authenticate(self, context: AnyContext) -> Principal:
        authorization = api_key = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value.strip()
            elif key == "x-api-key" and isinstance(value, str):
                api_key = value.strip()
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            scheme, credential = scheme.lower(), credential.strip()
            if scheme == "bearer" and credential:
                return self._authenticator.authenticate_jwt(credential)
            if scheme == "apikey" and credential:
                return await self._authenticator.authenticate_api_key(credential)
            raise Unauthenticated("the authorization header must be 'Bearer <token>' or 'ApiKey <key>'",
                                  reason="TOKEN_INVALID")
        if api_key:
            return await self._authenticator.authenticate_api_key(api_key)
        raise Unauthenticated("this call needs credentials: authorization: Bearer <token> or an API key",
                              reason="TOKEN_MISSING")
