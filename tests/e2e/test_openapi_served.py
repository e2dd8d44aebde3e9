"""The REST contract from outside: Envoy serves the OpenAPI document `make gen` wrote, as JSON and
YAML, valid OpenAPI 3.1 (openapi-spec-validator), and the docs page with assets of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_spec_validator import validate

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "gen" / "openapi" / "the0.openapi.json"

@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True)


async def test_the_document_served_is_the_generated_one_and_valid(stack: Any) -> None:
    async with httpx.AsyncClient(base_url=stack.http_url) as http:
        as_json = await http.get("/api/openapi.json")
        as_yaml = await http.get("/api/openapi.yaml")
        docs = await http.get("/api/docs")
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    assert as_json.content == DOCUMENT.read_bytes()
    document = as_json.json()
    assert yaml.safe_load(as_yaml.text) == document
    validate(document)  # openapi-spec-validator: OpenAPI 3.1 and its JSON Schema dialect
    assert document["openapi"].startswith("3.1")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "/api/openapi.json" in docs.text and "//cdn" not in docs.text and "https://" not in docs.text
    async with httpx.AsyncClient(base_url=stack.http_url) as http:
        for asset in ("/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css"):
            response = await http.get(asset)
            assert response.status_code == 200 and len(response.content) > 10_000, asset
