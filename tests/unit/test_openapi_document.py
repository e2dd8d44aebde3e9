"""The OpenAPI document `make gen` writes (gen/openapi/the0.openapi.json) says what the REST edge
really does: each item is one of what tools read wrong in the Swagger 2.0 document it replaced."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import descriptor_pb2

from the0.server.openapi import render

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "gen" / "openapi" / "the0.openapi.json"


def test_the_document_says_what_the_edge_does() -> None:
    """What tools read wrong in the Swagger 2.0 document (issue 12, "What was seen")."""
    document = json.loads(DOCUMENT.read_text())
    paths = document["paths"]
    operations = {op["operationId"]: op for item in paths.values() for op in item.values()}
    # Security on every operation, from the proto's auth_policy.
    assert all("security" in op for op in operations.values())
    assert operations["AuthService_Login"]["security"] == []
    assert operations["ApiKeyService_CreateApiKey"]["security"] == [{"Bearer": []}]
    assert {"ApiKey": []} in operations["BotService_GetBot"]["security"]
    assert set(document["components"]["securitySchemes"]) == {"Bearer", "ApiKey", "ApiKeyHeader"}
    # Raw bodies and media types.
    upload = operations["CustomBotService_UploadCustomBot"]["requestBody"]["content"]
    assert list(upload) == ["application/zip"] and upload["application/zip"]["schema"]["format"] == "binary"
    assert list(operations["CustomBotService_DownloadCustomBotArchive"]["responses"]["200"]["content"]) == [
        "application/zip"]
    assert next(iter(operations["BacktestService_GetBacktestLogs"]["responses"]["200"]["content"])).startswith(
        "text/plain")
    watch = operations["BotService_WatchBot"]["responses"]["200"]["content"]
    assert watch == {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/WatchBotResponse"}}}
    # PATCH documents updateMask; path parameters are plain names.
    patch = paths["/api/bots/{id}"]["patch"]
    assert [p["name"] for p in patch["parameters"]] == ["id", "updateMask"]
    assert not any("." in path for path in paths)
    # Limits and behaviours from the proto.
    register = document["components"]["schemas"]["RegisterRequest"]
    assert set(register["required"]) == {"email", "password", "username"}
    assert register["properties"]["password"]["minLength"] == 8
    assert register["properties"]["password"]["writeOnly"] is True
    assert document["components"]["schemas"]["Bot"]["properties"]["id"]["readOnly"] is True
    page_size = next(p for p in operations["BotService_ListBots"]["parameters"] if p["name"] == "pageSize")
    assert page_size["schema"]["minimum"] == 0
    # Rules schemathesis found the server enforcing without the document saying so.
    assert operations["AuthService_Login"]["requestBody"]["required"] is True  # its fields are
    assert operations["AuthService_RequestEmailVerification"].get("requestBody") is None
    assert document["components"]["schemas"]["ApiKey"]["properties"]["name"]["minLength"] == 3
    state = next(p for p in operations["BotService_ListBots"]["parameters"] if p["name"] == "state")
    assert state["schema"]["anyOf"][1] == {"type": "integer", "enum": [0, 1, 2, 3, 4, 5, 6]}  # name or number
    for listing in ("AuthService_ListSessions", "AdminService_ListUsers", "CustomBotService_ListCustomBotReviewQueue"):
        size = next(p for p in operations[listing]["parameters"] if p["name"] == "pageSize")
        assert size["schema"]["minimum"] == 0, listing
    # Errors: more than 200 and default, each a google.rpc.Status.
    get_bot = operations["BotService_GetBot"]["responses"]
    assert {"400", "401", "404", "429", "503"} <= set(get_bot) and "default" not in get_bot
    assert "403" in operations["ApiKeyService_CreateApiKey"]["responses"]
    # The internal platform API is not in the public document.
    text = json.dumps(document)
    assert "the0.platform" not in text and "PlatformService" not in text and "ServiceAccount" not in text
    assert not any(op["tags"] == ["PlatformService"] for op in operations.values())


def test_the_document_is_deterministic_and_current() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen" / "the0.binpb").read_bytes())
    first, _ = render(fds)
    second, _ = render(fds)
    assert first == second == DOCUMENT.read_text()


def test_every_operation_an_api_key_can_call_says_the_scope_it_needs() -> None:
    """Scoped API keys (issue 15): the scope from each RPC's (the0.common.v1.access)."""
    document = json.loads(DOCUMENT.read_text())
    operations = {op["operationId"]: op for item in document["paths"].values() for op in item.values()}
    for name, op in operations.items():
        takes_keys = {"ApiKey": []} in op["security"]
        assert ("x-the0-scope" in op) == takes_keys, name
        if takes_keys:
            scope = op["x-the0-scope"]
            assert f"`{scope}`" in op["description"], name
            assert "403" in op["responses"], name  # API_KEY_SCOPE
    assert operations["BotService_ListBots"]["x-the0-scope"] == "bots:read"
    assert operations["BotService_DeployBot"]["x-the0-scope"] == "bots:write"
    assert operations["BacktestService_GetBacktestLogs"]["x-the0-scope"] == "backtests:read"
    assert operations["CustomBotService_UploadCustomBot"]["x-the0-scope"] == "custom_bots:write"
    assert operations["AuthService_GetCurrentUser"]["x-the0-scope"] == "account:read"
    assert "`read`" in operations["BotService_ListBots"]["description"]
    assert "`read`" not in operations["BotService_DeployBot"]["description"]
