"""Envoy's configuration, checked against a real Envoy.

The upstream is a tiny grpc.aio server started here: the0.health.v1.HealthService
(GetHealth only), CustomBotService.UploadCustomBot (only to count an upload's bytes),
the standard grpc.health.v1.Health and server reflection. It
is not the real the0 server; its GetHealth answers with what the test asks for
through request headers (which reach it as gRPC metadata).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import yaml
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2
from grpc_status import rpc_status

from tests.e2e.test_edge_replies import raw_request
from tests.fixtures.envoy import EnvoyProxy, descriptor_set
from the0.custom_bot.v1 import custom_bot_service_pb2_grpc
from the0.devtools.embedded.envoy import envoy_binary
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc
from the0.server import envoy_config

REPO_ROOT = Path(__file__).resolve().parents[2]
FRONTEND = "http://localhost:3000"
UPLOAD_LIMIT = 16 * 1024 * 1024  # the proxy's THE0_MAX_UPLOAD_BYTES
HTTP_SERVICES = {
    "the0.auth.v1.AuthService",
    "the0.api_key.v1.ApiKeyService",
    "the0.bot.v1.BotService",
    "the0.custom_bot.v1.CustomBotService",
    "the0.backtest.v1.BacktestService",
    "the0.health.v1.HealthService",
    "the0.admin.v1.AdminService",
}


def render(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "http_port": 8080,
        "admin_port": 9901,
        "grpc_host": "127.0.0.1",
        "grpc_port": 50051,
        "frontend_url": FRONTEND,
        "descriptor_path": str(descriptor_set()),
    }
    return envoy_config.render_envoy_config(**(args | overrides))


def hcm_of(config_yaml: str) -> dict[str, Any]:
    listener = yaml.safe_load(config_yaml)["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def transcoder_of(config_yaml: str) -> dict[str, Any]:
    filters = hcm_of(config_yaml)["http_filters"]
    transcoder: dict[str, Any] = next(
        f for f in filters if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )["typed_config"]
    return transcoder


def routes_of(config_yaml: str) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = hcm_of(config_yaml)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


# -- The rendered configuration ---------------------------------------------------------------------


def test_default_config_passes_envoy_validate(tmp_path: Path) -> None:
    # Exactly what `make gen` writes to envoy/envoy.yaml; its relative descriptor path
    # resolves from the repository root, where production runs it from.
    out = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/python"), "-m", "the0.server.envoy_config"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    (tmp_path / "envoy.yaml").write_text(out)
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(tmp_path / "envoy.yaml"), "-l", "warning"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    assert "proto_descriptor: gen/the0.binpb" in out


def test_rendering_is_deterministic() -> None:
    assert render() == render()
    assert envoy_config.render_envoy_config(
        http_port=1, admin_port=2, grpc_host="the0-api", grpc_port=3, frontend_url="https://app.example",
        descriptor_path=str(descriptor_set()), services=["the0.health.v1.HealthService"],
    ) == envoy_config.render_envoy_config(
        http_port=1, admin_port=2, grpc_host="the0-api", grpc_port=3, frontend_url="https://app.example",
        descriptor_path=str(descriptor_set()), services=["the0.health.v1.HealthService"],
    )


def test_every_service_with_http_rules_is_transcoded() -> None:
    assert set(envoy_config.http_services(descriptor_set())) == HTTP_SERVICES
    transcoder = transcoder_of(render())
    assert set(transcoder["services"]) == HTTP_SERVICES
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["max_request_body_size"] >= 10 * 1024 * 1024


def test_streams_are_not_cut_by_timeouts() -> None:
    config = yaml.safe_load(render())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["request_timeout"] == "0s"
    assert int(hcm["stream_idle_timeout"].rstrip("s")) >= 60  # heartbeats come every 30 s
    forwarding = [r["route"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "route" in r]
    assert forwarding and all(route["timeout"] == "0s" for route in forwarding)
    cluster = config["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    assert cluster["health_checks"][0]["no_traffic_interval"]


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        ("/api/bots/{id}", ["/api/bots/x", "/api/bots/a-b_c.d"], ["/api/bots", "/api/bots/x/y", "/api/bots/"]),
        ("/api/bots/{bot.id}", ["/api/bots/x"], ["/api/bots/x/watch"]),
        ("/api/custom-bots/upload", ["/api/custom-bots/upload"], ["/api/custom-bots/uploadx"]),
        ("/v1/{name=shelves/*}/books", ["/v1/shelves/1/books"], ["/v1/shelves/books"]),
        ("/files/{path=**}", ["/files/a", "/files/a/b/c"], ["/files/"]),
        ("/v1/{id}:cancel", ["/v1/x:cancel"], ["/v1/x", "/v1/x:stop"]),
    ],
)
def test_path_template_regex(template: str, matches: list[str], misses: list[str]) -> None:
    import re

    regex = envoy_config.template_regex(template)
    assert all(re.fullmatch(regex, path) for path in matches), regex
    assert not any(re.fullmatch(regex, path) for path in misses), regex


def test_rest_paths_know_every_http_rule() -> None:
    paths = envoy_config.rest_paths(descriptor_set(), sorted(HTTP_SERVICES))
    assert paths[envoy_config.template_regex("/api/bots/{id}")] == {"GET", "PATCH", "PUT", "DELETE"}
    assert paths[envoy_config.template_regex("/health")] == {"GET"}
    allow = dict(envoy_config._allow(paths))
    # The literal upload path is also /api/custom-bots/{id} (GetCustomBot).
    assert allow[envoy_config.template_regex("/api/custom-bots/upload")] == "GET, POST"


def test_edge_routes_limits_and_local_replies() -> None:
    config = render(max_upload_bytes=5000)
    hcm = hcm_of(config)
    assert hcm["max_request_headers_kb"] == envoy_config.MAX_REQUEST_HEADERS_KB == 32
    transcoder = transcoder_of(config)
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": False, "reject_unknown_query_parameters": True}
    assert transcoder["match_incoming_request_route"] is True

    routes = routes_of(config)
    too_large = next(r for r in routes if r.get("name") == "upload_too_large")
    assert too_large["match"]["headers"][1] == {
        "name": "content-length", "range_match": {"start": 5001, "end": 2**63 - 1}}
    assert too_large["direct_response"]["status"] == 413
    with_lua = [r for r in routes if "envoy.filters.http.lua" in r.get("typed_per_filter_config", {})]
    assert [r["match"]["path"] for r in with_lua] == [envoy_config.UPLOAD_PATH]
    not_allowed = [r for r in routes if r.get("direct_response", {}).get("status") == 405]
    assert len(not_allowed) == len(envoy_config.rest_paths(descriptor_set(), sorted(HTTP_SERVICES)))
    assert all(r["response_headers_to_add"][0]["header"]["key"] == "allow" for r in not_allowed)
    assert routes[-1] == {"match": {"prefix": "/"}, "direct_response": {
        "status": 404, "body": {"inline_string": "unknown path"}}}

    mappers = hcm["local_reply_config"]["mappers"]
    reasons = [m["body_format_override"]["json_format"]["details"][0]["reason"] for m in mappers]
    assert {"UNKNOWN_QUERY_PARAMETER", "MALFORMED_JSON", "BODY_TOO_LARGE", "HEADERS_TOO_LARGE",
            "METHOD_NOT_ALLOWED", "UNKNOWN_PATH"} <= set(reasons)
    # Every reason an edge reply uses is in the contract's ErrorReason enum.
    from the0.common.v1 import error_reason_pb2

    names = {n.removeprefix("ERROR_REASON_") for n in error_reason_pb2.ErrorReason.DESCRIPTOR.values_by_name}
    assert set(reasons) <= names, set(reasons) - names
    for mapper in mappers:
        body = mapper["body_format_override"]["json_format"]
        assert set(body) == {"code", "message", "details"}
        assert "the0." not in body["message"]
        assert body["details"][0]["domain"] == "api.the0.dev"
        # Only REST requests: a native gRPC client keeps Envoy's grpc-status replies.
        assert "application/grpc" in mapper["filter"]["extension_filter"]["typed_config"]["expression"]


# -- Against a real Envoy ------------------------------------------------------------------------


class HealthService(health_service_pb2_grpc.HealthServiceServicer):
    """GetHealth echoes x-request-id in `version`; header x-test-code makes it fail with
    that gRPC code and an ErrorInfo."""

    async def GetHealth(
        self, request: health_service_pb2.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.GetHealthResponse:
        metadata = dict(context.invocation_metadata() or ())
        if code := metadata.get("x-test-code"):
            info = error_details_pb2.ErrorInfo(
                reason="DEPENDENCY_UNAVAILABLE", domain="the0.dev", metadata={"database": "down"}
            )
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(code=int(code), message="the database is down", details=[detail])
            await context.abort_with_status(rpc_status.to_status(status))
        response = health_service_pb2.GetHealthResponse(
            status="ok", version=str(metadata.get("x-request-id", ""))
        )
        response.checks.object_store = "ok"
        response.uptime.seconds = 5
        return response


class UploadOnly(custom_bot_service_pb2_grpc.CustomBotServiceServicer):
    """Drains an upload and reports its size as an error (INVALID_ARGUMENT): proof that
    every byte got through Envoy. Header x-test-limit: over that many bytes it stops with
    RESOURCE_EXHAUSTED and an ErrorInfo of reason x-test-reason (default TOO_LARGE), like
    the server; x-test-marker: sent back as trailer x-the0-error-reason."""

    calls = 0

    async def UploadCustomBot(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> Any:
        UploadOnly.calls += 1
        metadata = dict(context.invocation_metadata() or ())
        limit = int(str(metadata.get("x-test-limit", 2**62)))
        size = 0
        async for request in request_iterator:
            size += len(request.chunk.data)
            if size > limit:
                info = error_details_pb2.ErrorInfo(
                    reason=str(metadata.get("x-test-reason", "TOO_LARGE")), domain="api.the0.dev",
                    metadata={"limit": str(limit)},
                )
                detail = any_pb2.Any()
                detail.Pack(info)
                status = rpc_status.to_status(
                    status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="too large", details=[detail])
                )
                if marker := metadata.get("x-test-marker"):
                    status = grpc_status_with(status, ("x-the0-error-reason", str(marker)))
                await context.abort_with_status(status)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"received {size} bytes")


class _StatusWith(grpc.Status):
    def __init__(self, status: grpc.Status, trailer: tuple[str, str]) -> None:
        self.code, self.details = status.code, status.details
        self.trailing_metadata = (*status.trailing_metadata, trailer)


def grpc_status_with(status: grpc.Status, trailer: tuple[str, str]) -> grpc.Status:
    """The same grpc.Status with one more trailing metadata entry."""
    return _StatusWith(status, trailer)


@pytest.fixture(scope="module")
async def upstream_port() -> AsyncIterator[int]:
    # Uploads arrive as large messages: raise the 4 MiB default like the real server does.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(HealthService(), server)
    custom_bot_service_pb2_grpc.add_CustomBotServiceServicer_to_server(UploadOnly(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name, health.SERVICE_NAME,
         reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield port
    await server.stop(None)


@pytest.fixture(scope="module")
async def proxy(envoy_factory: Any, upstream_port: int) -> AsyncIterator[EnvoyProxy]:
    proxy = await envoy_factory(upstream_port, frontend_url=FRONTEND, max_upload_bytes=UPLOAD_LIMIT)
    yield proxy
    await proxy.astop()


@pytest.fixture
async def http(proxy: EnvoyProxy) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxy.http_url, timeout=10) as client:
        yield client


async def test_get_health_is_transcoded_to_camel_case_json(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "", "nats": "", "objectStore": "ok"}  # primitives always printed
    assert body["uptime"] == "5s"


async def test_request_id_is_forwarded_or_generated(http: httpx.AsyncClient, proxy: EnvoyProxy) -> None:
    given = await http.get("/health", headers={"x-request-id": "req-123"})
    assert given.json()["version"] == "req-123"
    generated = (await http.get("/health")).json()["version"]
    assert len(generated) >= 32  # a UUID from Envoy

    # The access log line (JSON on stdout) carries the client's method, path and the id.
    for _ in range(50):
        lines = [json.loads(x) for x in proxy.log_tail(20000).splitlines() if x.startswith("{")]
        logged = [x for x in lines if x.get("request_id") == "req-123"]
        if logged:
            break
        await asyncio.sleep(0.1)
    assert logged, proxy.log_tail()
    assert logged[0]["method"] == "GET"
    assert logged[0]["path"] == "/health"
    assert logged[0]["status"] == 200
    assert logged[0]["upstream"].startswith("127.0.0.1:")


async def test_unknown_path_is_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/nope")).status_code == 404
    # A route of a service the upstream does not even implement: the transcoder rejects it.
    assert (await http.get("/api/bots/x/nope")).status_code == 404


async def test_unknown_query_parameter_is_400(http: httpx.AsyncClient) -> None:
    assert (await http.get("/health?bogus=1")).status_code == 400


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        (code_pb2.UNAVAILABLE, 503),
        (code_pb2.NOT_FOUND, 404),
        (code_pb2.INVALID_ARGUMENT, 400),
        (code_pb2.UNAUTHENTICATED, 401),
    ],
)
async def test_grpc_error_becomes_http_status_with_json_status(
    http: httpx.AsyncClient, code: int, http_status: int
) -> None:
    response = await http.get("/health", headers={"x-test-code": str(code)})
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert body["message"] == "the database is down"
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "DEPENDENCY_UNAVAILABLE",
            "domain": "the0.dev",
            "metadata": {"database": "down"},
        }
    ]


async def test_cors_preflight_only_for_the_frontend(http: httpx.AsyncClient) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    allowed = await http.options("/api/bots", headers={"origin": FRONTEND, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == FRONTEND
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "PATCH" in allowed.headers["access-control-allow-methods"]
    assert "x-api-key" in allowed.headers["access-control-allow-headers"]
    assert allowed.headers["access-control-max-age"] == "86400"

    other = await http.options("/api/bots", headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


async def test_cors_headers_on_actual_request(http: httpx.AsyncClient) -> None:
    response = await http.get("/health", headers={"origin": FRONTEND})
    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "x-request-id", "retry-after", "ratelimit", "ratelimit-policy"} <= exposed
    other = await http.get("/health", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_large_upload_passes_envoy(http: httpx.AsyncClient) -> None:
    # A 12 MB raw body (HttpBody upload): no 413 from Envoy, every byte reaches the server.
    size = 12 * 1024 * 1024
    response = await http.post(
        "/api/custom-bots/upload", content=b"\0" * size, headers={"content-type": "application/zip"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"] == f"received {size} bytes"


async def test_native_grpc_passes_through_envoy(proxy: EnvoyProxy) -> None:
    async with grpc.aio.insecure_channel(proxy.grpc_target) as channel:
        check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING

        stub = health_service_pb2_grpc.HealthServiceStub(channel)
        reply = await stub.GetHealth(health_service_pb2.GetHealthRequest(), timeout=5)
        assert reply.status == "ok"
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.GetHealth(
                health_service_pb2.GetHealthRequest(), metadata=[("x-test-code", "5")], timeout=5
            )
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        status = rpc_status.from_call(failed.value)
        assert status is not None and status.details[0].Is(error_details_pb2.ErrorInfo.DESCRIPTOR)

        # A bidi stream of a service the transcoder does not know.
        reflection_stub = _reflection_stub(channel)
        request = reflection_v1alpha_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in reflection_stub.ServerReflectionInfo(iter([request]), timeout=5)]
        names = {s.name for s in responses[0].list_services_response.service}
        assert "the0.health.v1.HealthService" in names


async def _chunks(total: int, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A body without content-length (chunked), as a streaming client sends it."""
    while total > 0:
        yield b"\0" * min(chunk, total)
        total -= chunk


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-test-limit": "3000000"}, 413),  # the server's TOO_LARGE
        ({"x-test-limit": "3000000", "x-test-reason": "BODY_TOO_LARGE"}, 413),
        ({"x-test-limit": "3000000", "x-test-reason": "OTHER", "x-test-marker": "BODY_TOO_LARGE"}, 413),
        ({"x-test-limit": "3000000", "x-test-reason": "RATE_LIMITED"}, 429),  # a rate limit stays 429
    ],
)
async def test_streamed_upload_over_the_server_limit_is_413(
    http: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await http.post("/api/custom-bots/upload", content=_chunks(3_000_001),
                               headers={"content-type": "application/zip", **headers})
    assert response.status_code == status, response.text
    body = response.json()  # the server's own Status, untouched
    assert body["code"] == code_pb2.RESOURCE_EXHAUSTED and body["message"] == "too large"


async def test_upload_with_content_length_over_the_limit_never_reaches_the_server(proxy: EnvoyProxy) -> None:
    calls = UploadOnly.calls
    head = (f"POST /api/custom-bots/upload HTTP/1.1\r\nhost: x\r\ncontent-type: application/zip\r\n"
            f"x-request-id: rid-413\r\ncontent-length: {UPLOAD_LIMIT + 1}\r\n\r\n").encode()
    response = await raw_request(proxy.http_url, head)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/json"
    info = response.json()["details"][0]
    assert info["reason"] == "BODY_TOO_LARGE"
    assert info["metadata"] == {"requestId": "rid-413", "limit": str(UPLOAD_LIMIT)}
    assert UploadOnly.calls == calls


async def test_edge_replies_leave_native_grpc_alone(proxy: EnvoyProxy) -> None:
    # A method the upstream does not have: grpc-status UNIMPLEMENTED as before, no JSON.
    async with grpc.aio.insecure_channel(proxy.grpc_target) as channel:
        call: Any = channel.unary_unary("/the0.bot.v1.BotService/GetBot")
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call(b"", timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "{" not in (failed.value.details() or "")


def _reflection_stub(channel: grpc.aio.Channel) -> Any:
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    return reflection_pb2_grpc.ServerReflectionStub(channel)


async def test_upstream_is_actively_health_checked(proxy: EnvoyProxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url, timeout=5) as admin:
        clusters = (await admin.get("/clusters")).text
        stats = (await admin.get("/stats", params={"filter": "the0_grpc.health_check"})).text
    assert "the0_grpc::127.0.0.1:" in clusters and "health_flags::healthy" in clusters, clusters
    assert "the0_grpc.health_check.attempt: 0" not in stats, stats
