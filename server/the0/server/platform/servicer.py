"""the0.platform.v1.PlatformService over gRPC: proto ↔ domain values, one service call each."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc.aio
from google.api import httpbody_pb2

from the0.platform.v1 import (
    bot_deployment_pb2,
    platform_service_pb2,
    platform_service_pb2_grpc,
    service_account_pb2,
)
from the0.server.identity.principal import current_principal
from the0.server.platform.service import BotDeployment, PlatformService, ServiceAccount
from the0.server.proto_values import to_struct, to_timestamp
from the0.server.validation import validate_request

_ROLES = {
    service_account_pb2.SERVICE_ACCOUNT_ROLE_RUNTIME: "runtime",
    service_account_pb2.SERVICE_ACCOUNT_ROLE_ANALYZER: "analyzer",
}
_ROLE_VALUES = {name: value for value, name in _ROLES.items()}


class PlatformServicer(platform_service_pb2_grpc.PlatformServiceServicer):
    def __init__(self, service: PlatformService) -> None:
        self._service = service

    async def GetBotDeployment(
        self,
        request: platform_service_pb2.GetBotDeploymentRequest,
        context: grpc.aio.ServicerContext[platform_service_pb2.GetBotDeploymentRequest, bot_deployment_pb2.BotDeployment],
    ) -> bot_deployment_pb2.BotDeployment:
        validate_request(request)
        return deployment_to_proto(await self._service.get_bot_deployment(current_principal(), request.id))

    async def GetCustomBotArchive(
        self,
        request: platform_service_pb2.GetCustomBotArchiveRequest,
        context: grpc.aio.ServicerContext[platform_service_pb2.GetCustomBotArchiveRequest, httpbody_pb2.HttpBody],
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        validate_request(request)
        chunks = await self._service.open_custom_bot_archive(current_principal(), request.id)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield httpbody_pb2.HttpBody(content_type="application/zip", data=chunk)

    async def CreateServiceAccount(
        self,
        request: platform_service_pb2.CreateServiceAccountRequest,
        context: grpc.aio.ServicerContext[
            platform_service_pb2.CreateServiceAccountRequest, platform_service_pb2.CreateServiceAccountResponse
        ],
    ) -> platform_service_pb2.CreateServiceAccountResponse:
        principal = current_principal()
        validate_request(request)
        account, key = await self._service.create_service_account(
            principal, request.name, _ROLES.get(request.role, "")
        )
        return platform_service_pb2.CreateServiceAccountResponse(service_account=account_to_proto(account), key=key)


def account_to_proto(account: ServiceAccount) -> service_account_pb2.ServiceAccount:
    return service_account_pb2.ServiceAccount(
        id=account.id, name=account.name, role=_ROLE_VALUES.get(account.role, 0),  # type: ignore[arg-type]
        create_time=to_timestamp(account.create_time),
    )


def deployment_to_proto(deployment: BotDeployment) -> bot_deployment_pb2.BotDeployment:
    archive = deployment.archive
    location = bot_deployment_pb2.ArchiveLocation(
        bucket=archive.bucket, object_key=archive.object_key, download_url=archive.download_url or "",
        sha256=archive.sha256, size_bytes=archive.size_bytes,
    )
    if archive.download_url_expire_time is not None:
        location.download_url_expire_time.CopyFrom(to_timestamp(archive.download_url_expire_time))
    version = deployment.custom_bot
    return bot_deployment_pb2.BotDeployment(
        bot_id=deployment.bot_id, owner_id=deployment.owner_id, name=deployment.name, state=deployment.state,
        config=to_struct(deployment.config),
        custom_bot=bot_deployment_pb2.CustomBotRuntime(
            id=version.id, name=version.name, version=version.version, type=version.type,
            runtime=version.runtime, entrypoints=deployment.entrypoints, archive=location,
        ),
    )
