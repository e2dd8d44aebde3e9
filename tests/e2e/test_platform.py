"""The platform end to end: real server, real Envoy, real NATS, SQLite and PostgreSQL."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc
from the0.server.app import API_SERVICES

# DESIGN.md §2, the REST surface: (method, path, RPC). The test is the spec:
# every route must reach its RPC through Envoy, none may be Envoy's 404.
REST_ROUTES = [
    ("POST", "/api/auth/register", "AuthService.Register"),
    ("POST", "/api/auth/login", "AuthService.Login"),
    ("POST", "/api/auth/refresh", "AuthService.RefreshToken"),
    ("POST", "/api/auth/logout", "AuthService.Logout"),
    ("GET", "/api/auth/me", "AuthService.GetCurrentUser"),
    ("GET", "/api/auth/sessions", "AuthService.ListSessions"),
    ("DELETE", "/api/auth/sessions/s1", "AuthService.RevokeSession"),
    ("POST", "/api/auth/logout-everywhere", "AuthService.LogoutEverywhere"),
    ("POST", "/api/auth/password", "AuthService.ChangePassword"),
    ("POST", "/api/auth/password-reset/request", "AuthService.RequestPasswordReset"),
    ("POST", "/api/auth/password-reset", "AuthService.ResetPassword"),
    ("POST", "/api/auth/email-verification/request", "AuthService.RequestEmailVerification"),
    ("POST", "/api/auth/email-verification", "AuthService.VerifyEmail"),
    ("POST", "/api/auth/login/second-factor", "AuthService.CompleteLogin"),
    ("POST", "/api/auth/2fa/totp/enroll", "AuthService.BeginTotpEnrollment"),
    ("POST", "/api/auth/2fa/totp/confirm", "AuthService.ConfirmTotpEnrollment"),
    ("POST", "/api/auth/2fa/totp/disable", "AuthService.DisableTotp"),
    ("POST", "/api/auth/delete-account", "AuthService.DeleteAccount"),
    ("GET", "/api/auth/audit-events", "AuthService.ListAuditEvents"),
    ("GET", "/api/bots", "BotService.ListBots"),
    ("POST", "/api/bots", "BotService.CreateBot"),
    ("GET", "/api/bots/b1", "BotService.GetBot"),
    ("PUT", "/api/bots/b1", "BotService.UpdateBot"),
    ("PATCH", "/api/bots/b1", "BotService.UpdateBot"),
    ("DELETE", "/api/bots/b1", "BotService.DeleteBot"),
    ("POST", "/api/bots/b1/deploy", "BotService.DeployBot"),
    ("POST", "/api/bots/b1/stop", "BotService.StopBot"),
    ("GET", "/api/bots/b1/watch", "BotService.WatchBot"),
    ("GET", "/api/bots/b1/logs", "BotService.ListBotLogs"),
    ("GET", "/api/bots/b1/logs/stream", "BotService.StreamBotLogs"),
    ("GET", "/api/bots/b1/executions", "BotService.ListBotExecutions"),
    ("POST", "/api/custom-bots/upload", "CustomBotService.UploadCustomBot"),
    ("GET", "/api/custom-bots", "CustomBotService.ListCustomBots"),
    ("GET", "/api/custom-bots/c1", "CustomBotService.GetCustomBot"),
    ("GET", "/api/custom-bots/c1/archive", "CustomBotService.DownloadCustomBotArchive"),
    ("POST", "/api/custom-bots/c1/review", "CustomBotService.ReviewCustomBot"),
    ("GET", "/api/custom-bots/c1/watch", "CustomBotService.WatchCustomBot"),
    ("POST", "/api/backtests", "BacktestService.CreateBacktest"),
    ("GET", "/api/backtests", "BacktestService.ListBacktests"),
    ("GET", "/api/backtests/t1", "BacktestService.GetBacktest"),
    ("GET", "/api/backtests/t1/results", "BacktestService.GetBacktestResults"),
    ("GET", "/api/backtests/t1/logs", "BacktestService.GetBacktestLogs"),
    ("POST", "/api/backtests/t1/cancel", "BacktestService.CancelBacktest"),
    ("GET", "/api/backtests/t1/watch", "BacktestService.WatchBacktest"),
    ("POST", "/api/api-keys", "ApiKeyService.CreateApiKey"),
    ("GET", "/api/api-keys", "ApiKeyService.ListApiKeys"),
    ("DELETE", "/api/api-keys/k1", "ApiKeyService.RevokeApiKey"),
    ("GET", "/api/admin/users", "AdminService.ListUsers"),
    ("GET", "/api/admin/users/u1", "AdminService.GetUser"),
    ("POST", "/api/admin/users/u1/disable", "AdminService.DisableUser"),
    ("POST", "/api/admin/users/u1/enable", "AdminService.EnableUser"),
    ("POST", "/api/admin/users/u1/force-password-reset", "AdminService.ForcePasswordReset"),
    ("POST", "/api/admin/users/u1/role", "AdminService.SetUserRole"),
    ("POST", "/api/admin/users/u1/reset-two-factor", "AdminService.ResetTwoFactor"),
    ("GET", "/api/admin/custom-bots/review-queue", "CustomBotService.ListCustomBotReviewQueue"),
    ("GET", "/api/admin/audit-events", "AdminService.ListAuditEvents"),
]
# Identity RPCs that need no credentials (AUTH_POLICY_PUBLIC in the proto).
PUBLIC_RPCS = ("AuthService.Register", "AuthService.Login", "AuthService.RefreshToken",
               "AuthService.RequestPasswordReset", "AuthService.ResetPassword", "AuthService.VerifyEmail",
               "AuthService.CompleteLogin")


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(envoy=True)


@pytest.fixture
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as client:
        yield client


def error_info(body: dict) -> dict:
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, body
    return infos[0]


async def test_rest_health_reports_every_check_ok(http):
    response = await http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "nats": "ok", "objectStore": "ok"}
    assert body["version"]
    assert body["uptime"].endswith("s")
    assert body["timestamp"].endswith("Z")
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(("method", "path", "rpc"), REST_ROUTES, ids=[f"{m} {p}" for m, p, _ in REST_ROUTES])
async def test_every_rest_route_reaches_its_rpc(http, method, path, rpc):
    content = b"PK\x05\x06" + b"\0" * 18 if path.endswith("/upload") else b"{}"
    headers = {"content-type": "application/zip" if path.endswith("/upload") else "application/json"}
    body = content if method in {"POST", "PUT", "PATCH"} else None
    anonymous = await http.request(method, path, content=body, headers=headers)
    if rpc in PUBLIC_RPCS:
        # Reached the RPC without credentials: it validated the empty body.
        assert anonymous.status_code == 400, anonymous.text
        assert error_info(anonymous.json())["reason"] == "VALIDATION_FAILED"
        return
    # Every other RPC, streaming ones included, is guarded.
    assert anonymous.status_code == 401, anonymous.text
    assert error_info(anonymous.json())["reason"] == "TOKEN_MISSING"
    registered = await http.post("/api/auth/register", json={
        "email": "routes@example.com", "password": "correct horse battery", "username": "routes"})
    assert registered.status_code == 200, registered.text
    headers["authorization"] = f"Bearer {registered.json()['accessToken']}"
    response = await http.request(method, path, content=body, headers=headers)
    # Every service is built, and the route reached its RPC: success, or the RPC's own answer to the
    # empty body or made-up id (an ErrorInfo, so not Envoy's 404 and never UNIMPLEMENTED).
    # (403: a plain user may not call admin RPCs; the upload's empty zip is ARCHIVE_INVALID.)
    assert response.status_code in {200, 400, 403, 404}, response.text
    if response.status_code != 200:
        assert error_info(response.json())["reason"] in {"VALIDATION_FAILED", "NOT_FOUND", "ARCHIVE_INVALID",
                                                         "PERMISSION_DENIED"}


async def test_route_table_covers_every_http_rule_in_the_contract(descriptor_path):
    """A route added to the proto without being added here (and to DESIGN.md) fails."""
    from google.api import annotations_pb2, http_pb2
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    rules = set()
    for file in fds.file:
        if not file.package.startswith("the0."):
            continue
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue  # the internal platform API has no REST routes, on purpose
                rule = method.options.Extensions[annotations_pb2.http]
                for r in (rule, *rule.additional_bindings):
                    verb = r.WhichOneof("pattern")
                    rules.add((verb.upper(), getattr(r, verb), f"{service.name}.{method.name}"))
    assert isinstance(rule, http_pb2.HttpRule)
    covered = {rpc for _, _, rpc in REST_ROUTES} | {"HealthService.GetHealth"}
    assert {rpc for _, _, rpc in rules} == covered


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/api/nope", None, 404),
        ("GET", "/api/bots/b1/nope", None, 404),
        ("GET", "/health?bogus=1", None, 400),
        ("GET", "/api/bots?pageSize=abc", None, 400),
        ("POST", "/api/auth/login", b"{not json", 400),
        ("POST", "/api/auth/login", b'{"email": {"nested": 1}}', 400),
        ("POST", "/api/auth/login", b'{"email": "a@b.c", "password": 12.5e400}', 400),
    ],
    ids=["unknown-path", "unknown-subpath", "unknown-query", "wrong-query-type", "malformed-json",
         "wrong-field-type", "number-overflow"],
)
async def test_bad_requests_get_a_clear_4xx(http, method, path, body, status):
    response = await http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.text  # a message a person can read, not an empty body


async def test_oversized_json_body_is_refused_with_413(http):
    # JSON bodies are capped at 1 MiB at the edge (configs are at most 64 KiB).
    huge = b'{"email": "' + b"a" * (1536 * 1024) + b'"}'
    response = await http.post("/api/auth/login", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_cors_preflight_allows_only_the_frontend_origin(http):
    def preflight(origin: str):
        return http.options(
            "/api/bots",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )

    allowed = await preflight("http://localhost:3000")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    denied = await preflight("https://evil.example")
    assert "access-control-allow-origin" not in denied.headers


async def test_reflection_lists_every_service_of_the_contract(stack, descriptor_path):
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    contract = {f"{file.package}.{service.name}" for file in fds.file if file.package.startswith("the0.")
                for service in file.service}
    assert set(API_SERVICES) == contract
    assert len(API_SERVICES) == 8  # seven public services (AdminService: admin-only) and the internal platform API
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name async for r in responses for s in r.list_services_response.service}
    assert contract <= names
    assert "grpc.health.v1.Health" in names


async def test_standard_grpc_health_is_serving(stack):
    stub = health_pb2_grpc.HealthStub(stack.channel)
    for service in ("", *API_SERVICES):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("through_envoy", [False, True], ids=["direct", "via-envoy"])
async def test_grpc_clients_get_rich_errors_directly_and_through_envoy(stack, through_envoy):
    target = stack.http_url.removeprefix("http://") if through_envoy else stack.grpc_target
    async with grpc.aio.insecure_channel(target) as channel:
        health = await health_service_pb2_grpc.HealthServiceStub(channel).GetHealth(
            health_service_pb2.GetHealthRequest()
        )
        assert health.status == "ok"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await bot_service_pb2_grpc.BotServiceStub(channel).GetBot(bot_service_pb2.GetBotRequest(id="b1"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    status = rpc_status.from_call(raised.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "TOKEN_MISSING"


async def test_streaming_rpc_errors_through_envoy_as_json(http):
    response = await http.get("/api/bots/b1/watch")
    assert response.status_code == 401
    assert error_info(response.json())["reason"] == "TOKEN_MISSING"


async def test_request_id_from_envoy_is_echoed(http):
    response = await http.get("/health", headers={"x-request-id": "req-12345"})
    assert response.headers["x-request-id"] == "req-12345"


async def test_health_is_degraded_when_nats_is_unreachable(stack_factory):
    from the0.devtools.embedded.processes import free_port

    stack = await stack_factory(nats_url=f"nats://127.0.0.1:{free_port()}", wait_for_nats=False)
    reply = await health_service_pb2_grpc.HealthServiceStub(stack.channel).GetHealth(
        health_service_pb2.GetHealthRequest()
    )
    assert reply.status == "degraded"
    assert (reply.checks.database, reply.checks.nats, reply.checks.object_store) == ("ok", "down", "ok")


async def test_health_answers_503_when_the_database_is_unreachable(stack_factory):
    from the0.devtools.embedded.processes import free_port

    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    stack = await stack_factory(envoy=True, database_url=dead)
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    info = error_info(body)
    assert info["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert info["metadata"] == {"database": "down", "nats": "ok", "objectStore": "ok"}
    assert "Traceback" not in json.dumps(body)


async def test_health_checks_a_real_s3_object_store(stack_factory, s3_server):
    stack = await stack_factory(
        minio_endpoint=s3_server.endpoint,
        minio_access_key=s3_server.access_key,
        minio_secret_key=s3_server.secret_key,
    )
    reply = await health_service_pb2_grpc.HealthServiceStub(stack.channel).GetHealth(
        health_service_pb2.GetHealthRequest()
    )
    assert reply.checks.object_store == "ok"
    assert reply.status == "ok"
