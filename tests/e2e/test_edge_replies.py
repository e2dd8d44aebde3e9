"""Envoy's own replies through the real server's REST surface: every bad input gets a clear 4xx
as JSON (the server's google.rpc.Status shape, an ErrorInfo reason in domain api.the0.dev, the
request id), never text/plain, never a proto type name, never 429 for something too large."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.accounts import new_account
from tests.fixtures.services import service_unavailable

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the edge is the same on both

UPLOAD = "/api/custom-bots/upload"
LIMIT = 10 * 1024 * 1024  # THE0_MAX_UPLOAD_BYTES default
ZIP = {"content-type": "application/zip"}


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True)


@pytest.fixture
async def http(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=30) as client:
        yield client


@pytest.fixture
async def auth(stack: Any) -> dict[str, str]:
    _, token = await new_account(stack.channel)
    return {"authorization": f"Bearer {token}"}


def info_of(body: dict[str, Any]) -> dict[str, Any]:
    infos = [d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert len(infos) == 1, body
    info: dict[str, Any] = infos[0]
    return info


def edge_error(
    response: httpx.Response, status: int, reason: str, code: int, *, request_id: str | None = "rid-edge"
) -> dict[str, Any]:
    """Checks one of Envoy's JSON replies; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code
    message = body["message"]
    assert message and not any(x in message for x in ("the0.", "TYPE_", "Request", "google.")), body
    info = info_of(body)
    assert (info["reason"], info["domain"]) == (reason, "api.the0.dev"), body
    if request_id is not None:
        assert info["metadata"]["requestId"] == request_id
        assert response.headers["x-request-id"] == request_id
    assert all(isinstance(v, str) for v in info["metadata"].values()), info
    return body


RID = {"x-request-id": "rid-edge"}


@pytest.mark.parametrize("query", ["foo=1", "pageSize=abc"])
async def test_unknown_or_mistyped_query_parameter(http: httpx.AsyncClient, auth: dict[str, str], query: str) -> None:
    response = await http.get(f"/api/bots?{query}", headers={**auth, **RID})
    edge_error(response, 400, "UNKNOWN_QUERY_PARAMETER", 3)
    assert "ListBotsRequest" not in response.text


@pytest.mark.parametrize("body", [b"{bad", b'{"email": 5, "password": "x"}', b'{"email": ["a"]}', b"[1, 2]"])
async def test_malformed_or_mistyped_json_body(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post("/api/auth/login", content=body,
                               headers={"content-type": "application/json", **RID})
    edge_error(response, 400, "MALFORMED_JSON", 3)
    assert "TYPE_STRING" not in response.text


async def test_unknown_json_fields_are_ignored_not_refused(http: httpx.AsyncClient) -> None:
    # The transcoder drops unknown body fields (proto3 JSON): the server answers.
    response = await http.post("/api/auth/login", json={"email": "nobody@example.com", "password": "x" * 12,
                                                        "bogus": 1}, headers=RID)
    assert response.status_code == 401, response.text
    assert info_of(response.json())["reason"] == "INVALID_CREDENTIALS"


async def test_json_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/auth/login", content=b'{"email": "' + b"a" * 2_000_000 + b'"}',
                               headers={"content-type": "application/json", **RID})
    body = edge_error(response, 413, "BODY_TOO_LARGE", 8)
    assert info_of(body)["metadata"]["limit"] == str(1024 * 1024)


@pytest.mark.parametrize("path", ["/nope", "/api/bots/x/nope", "/api", "/api/custom-bots/x/y/z"])
async def test_unknown_path_is_404(http: httpx.AsyncClient, path: str) -> None:
    edge_error(await http.get(path, headers=RID), 404, "UNKNOWN_PATH", 5)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/auth/login", "POST"),
        ("PUT", "/health", "GET"),
        ("HEAD", "/health", "GET"),
        ("POST", "/api/bots/some-id", "DELETE, GET, PATCH, PUT"),
        ("DELETE", UPLOAD, "GET, POST"),  # GET is GetCustomBot with id "upload"
        ("OPTIONS", "/api/bots", "GET, POST"),  # not a CORS preflight
    ],
)
async def test_wrong_method_is_405_with_allow(http: httpx.AsyncClient, method: str, path: str, allow: str) -> None:
    response = await http.request(method, path, headers=RID)
    assert response.headers["allow"] == allow
    if method == "HEAD":
        assert response.status_code == 405 and response.headers["content-type"] == "application/json"
        return
    edge_error(response, 405, "METHOD_NOT_ALLOWED", 12)
    assert method in response.json()["message"]


async def test_query_method_is_405_with_allow(http: httpx.AsyncClient) -> None:
    # QUERY (IETF draft, a safe method with content) is routed like any method a path does not take.
    # Without a content-type Envoy refuses it before routing as malformed (400, response code details
    # query_missing_content_type): the draft's QUERY always carries typed content.
    query = {**RID, "content-type": "application/json"}
    response = await http.request("QUERY", "/api/bots", headers=query, content=b"{}")
    assert response.headers.get("allow") == "GET, POST", response.text
    edge_error(response, 405, "METHOD_NOT_ALLOWED", 12)
    edge_error(await http.request("QUERY", "/health", headers=RID), 400, "MALFORMED_REQUEST", 3, request_id=None)


async def test_server_errors_are_untouched(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    # A 404 of the server (transcoded) keeps its own reason and message.
    response = await http.get("/api/bots/0f6e2b64-0000-4000-8000-000000000000", headers={**auth, **RID})
    assert response.status_code == 404, response.text
    info = info_of(response.json())
    assert info["reason"] == "NOT_FOUND" and info["domain"] == "api.the0.dev"
    unauthenticated = await http.get("/api/bots", headers=RID)
    assert unauthenticated.status_code == 401
    assert info_of(unauthenticated.json())["reason"] == "TOKEN_MISSING"


async def test_cors_preflight_still_works_on_every_path(http: httpx.AsyncClient) -> None:
    preflight = {"origin": "http://localhost:3000", "access-control-request-method": "DELETE"}
    for path in ("/api/bots/abc", "/api/auth/login", UPLOAD):
        response = await http.options(path, headers=preflight)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


# -- Sizes: consistent from the edge to the server -----------------------------------------------


async def test_oversized_header_is_431_json(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await http.get("/api/bots", headers={**auth, **RID, "x-big": "a" * 50 * 1024})
    # Over HTTP/1.1 Envoy refuses before it has parsed a header: there is no request id to echo.
    body = edge_error(response, 431, "HEADERS_TOO_LARGE", 8, request_id=None)
    assert info_of(body)["metadata"]["limit"] == str(32 * 1024)


async def test_oversized_header_over_http2_is_refused(stack: Any) -> None:
    # Envoy's HTTP/2 codec resets the stream (INTERNAL_ERROR) instead of answering 431: the
    # headers never become a request, so no local reply (and no JSON) is possible. It never
    # reaches the server either.
    curl = shutil.which("curl")
    if curl is None:
        service_unavailable("curl (with HTTP/2) not installed")  # skips locally, fails on CI
    process = await asyncio.create_subprocess_exec(
        curl, "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{content_type}",
        "-H", "x-request-id: rid-edge", "-H", f"x-big: {'a' * 50 * 1024}", f"{stack.http_url}/api/bots",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 92, (out, err)  # CURLE_HTTP2_STREAM
    assert b"INTERNAL_ERROR" in err
    assert b"the0." not in out
    # Under the limit, the same request over HTTP/2 is answered by the server (401: no token).
    process = await asyncio.create_subprocess_exec(
        curl, "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code}",
        "-H", f"x-big: {'a' * 20 * 1024}", f"{stack.http_url}/api/bots",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    text, _, status = out.decode().rpartition("\n")
    assert status == "401", (out, err)
    assert info_of(json.loads(text))["reason"] == "TOKEN_MISSING"


async def raw_request(base_url: str, head: bytes, body: bytes = b"") -> httpx.Response:
    """One HTTP/1.1 request over a plain socket, reading the answer without sending (all of) the
    body: what a browser sees when the server answers early. (httpx writes the whole body
    before it reads; Envoy closes after an early answer, so httpx may see a reset instead.)"""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)  # Envoy closes after the answer
    finally:
        writer.close()
    header_block, _, content = raw.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode().split("\r\n")
    headers = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=content)


async def test_long_id_in_path_reaches_the_server_not_429(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    # 30,000 characters: under Envoy's 32 KiB, and the server's metadata limit is above Envoy's,
    # so the server answers with its own 4xx, never RESOURCE_EXHAUSTED (429).
    response = await http.get("/api/bots/" + "a" * 30_000, headers={**auth, **RID})
    assert response.status_code in (400, 404), response.text
    assert response.headers["content-type"].startswith("application/json")
    assert info_of(response.json())["reason"] in ("VALIDATION_FAILED", "NOT_FOUND")


async def test_long_update_mask_reaches_the_server_not_429(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    mask = ",".join(["name"] * 3400)[:20_000]
    response = await http.patch("/api/bots/some-id", params={"updateMask": mask}, json={"name": "x"},
                                headers={**auth, **RID})
    assert response.status_code in (400, 404), response.text
    assert response.headers["content-type"].startswith("application/json")


async def test_upload_with_content_length_over_the_limit_is_413_before_the_server(
    stack: Any, auth: dict[str, str]
) -> None:
    head = (
        f"POST {UPLOAD} HTTP/1.1\r\nhost: the0\r\nauthorization: {auth['authorization']}\r\n"
        f"content-type: application/zip\r\nx-request-id: rid-edge\r\ncontent-length: {11 * 1000 * 1000}\r\n\r\n"
    ).encode()
    # Answered at the headers: no byte of the body is sent. (Body bytes that reach Envoy after it
    # has answered and closed make its kernel reset the connection, which can discard the answer
    # before the client reads it: CI saw that once.)
    response = await raw_request(stack.http_url, head)
    body = edge_error(response, 413, "BODY_TOO_LARGE", 8)
    assert info_of(body)["metadata"]["limit"] == str(LIMIT)
    assert "10 MiB" in body["message"]


async def test_chunked_upload_over_the_limit_is_413(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the server counts as it reads
        # 10 MiB + 1 byte: the server notices with the last byte, so the whole body has been sent
        # when the answer comes (see raw_request for why that matters to httpx).
        for _ in range(10):
            yield b"\0" * (1024 * 1024)
        yield b"\0"

    response = await http.post(UPLOAD, content=chunks(), headers={**auth, **ZIP, **RID})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 8  # the server's RESOURCE_EXHAUSTED, its own message and reason
    assert info_of(body)["reason"] in ("TOO_LARGE", "BODY_TOO_LARGE")
    assert response.headers["x-request-id"] == "rid-edge"


async def test_upload_under_the_limit_still_reaches_the_server(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await http.post(UPLOAD, content=b"not a zip", headers={**auth, **ZIP, **RID})
    assert response.status_code == 400, response.text
    assert info_of(response.json())["reason"] == "ARCHIVE_INVALID"



@pytest.mark.parametrize("name", ["m'", "|hnf", "a|b", "x!y", "~", "a^b"])
async def test_a_header_name_grpc_metadata_cannot_carry_is_dropped_not_a_500(
    http: httpx.AsyncClient, auth: dict[str, str], name: str
) -> None:
    """Legal in HTTP, not in gRPC metadata ([0-9a-z_.-]): grpcio refused the call with 500 "Illegal
    header key"; the edge drops the header, and the call is answered as without it."""
    response = await http.get("/api/auth/me", headers={**auth, name: "1"})
    assert response.status_code == 200, response.text
    refused = await http.get(f"/api/bots/{uuid.uuid4()}", headers={**auth, name: "1", "x-fine.header_1": "2"})
    assert refused.status_code == 404 and refused.json()["details"][0]["reason"] == "NOT_FOUND", refused.text
