"""The platform API (the0.platform.v1): service keys by role, and never through the public Envoy."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.test_custom_bots import ADMIN_EMAIL, ADMIN_PASSWORD, admin, register
from the0.platform.v1 import platform_service_pb2, platform_service_pb2_grpc, service_account_pb2

RUNTIME_KEY = "runtime-secret-" + "r" * 32
ANALYZER_KEY = "analyzer-secret-" + "a" * 32


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo")


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(
        envoy=True, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD,
        service_accounts=(("runtime", "runtime-1", RUNTIME_KEY), ("analyzer", "analyzer-1", ANALYZER_KEY)),
    )


def deployment_request() -> platform_service_pb2.GetBotDeploymentRequest:
    return platform_service_pb2.GetBotDeploymentRequest(id=str(uuid.uuid4()))


async def test_runtime_key_reaches_get_bot_deployment_directly(stack: Any) -> None:
    stub = platform_service_pb2_grpc.PlatformServiceStub(stack.channel)
    for metadata in ([("x-service-key", RUNTIME_KEY)], [("authorization", f"Service {RUNTIME_KEY}")]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # authenticated: the unknown bot is NOT_FOUND
            await stub.GetBotDeployment(deployment_request(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason(caught.value) == "NOT_FOUND"


@pytest.mark.parametrize(("who", "code", "want_reason"), [
    ("user", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    ("analyzer", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    ("nobody", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    ("wrong-key", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),
])
async def test_get_bot_deployment_refuses_other_callers(
    stack: Any, who: str, code: grpc.StatusCode, want_reason: str
) -> None:
    metadata = {
        "user": await register(stack),
        "analyzer": [("x-service-key", ANALYZER_KEY)],
        "nobody": [],
        "wrong-key": [("x-service-key", "x" * 40)],
    }[who]
    stub = platform_service_pb2_grpc.PlatformServiceStub(stack.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetBotDeployment(deployment_request(), metadata=metadata)
    assert caught.value.code() == code
    assert reason(caught.value) == want_reason


async def test_runtime_key_cannot_fetch_archives(stack: Any) -> None:
    stub = platform_service_pb2_grpc.PlatformServiceStub(stack.channel)
    call = stub.GetCustomBotArchive(platform_service_pb2.GetCustomBotArchiveRequest(id=str(uuid.uuid4())),
                                    metadata=[("x-service-key", RUNTIME_KEY)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(caught.value) == "PERMISSION_DENIED"


async def test_admin_creates_a_service_account_whose_key_works(stack: Any) -> None:
    stub = platform_service_pb2_grpc.PlatformServiceStub(stack.channel)
    request = platform_service_pb2.CreateServiceAccountRequest(
        name="analyzer-2", role=service_account_pb2.SERVICE_ACCOUNT_ROLE_ANALYZER)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateServiceAccount(request, metadata=await register(stack))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(caught.value) == "PERMISSION_DENIED"

    created = await stub.CreateServiceAccount(request, metadata=await admin(stack))
    assert created.key.startswith("the0svc_")
    assert created.service_account.role == service_account_pb2.SERVICE_ACCOUNT_ROLE_ANALYZER
    call = stub.GetCustomBotArchive(platform_service_pb2.GetCustomBotArchiveRequest(id=str(uuid.uuid4())),
                                    metadata=[("x-service-key", created.key)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason(caught.value) == "NOT_FOUND"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateServiceAccount(request, metadata=await admin(stack))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(caught.value) == "ALREADY_EXISTS"


async def test_public_envoy_refuses_the_platform_api(stack: Any) -> None:
    target = stack.http_url.removeprefix("http://")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = platform_service_pb2_grpc.PlatformServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBotDeployment(deployment_request(), metadata=[("x-service-key", RUNTIME_KEY)])
        # Envoy's HTTP 404: the server never saw the call.
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as http:
        response = await http.post("/the0.platform.v1.PlatformService/GetBotDeployment",
                                   headers={"x-service-key": RUNTIME_KEY, "content-type": "application/json"},
                                   content=b"{}")
    assert response.status_code == 404
    assert response.json()["details"][0]["reason"] == "UNKNOWN_PATH"
