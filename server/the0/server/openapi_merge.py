"""Merge per-file Swagger 2.0 documents into one document for the whole REST API.

protoc-gen-swagger (v1.6.4, Debian's golang-grpc-gateway) writes one document
per *_service.proto and cannot merge across packages. This joins them:

    python -m the0.server.openapi_merge OUT_FILE IN_FILE...

Paths and definitions are merged (a definition may appear in several inputs
if it is identical; the same name with different content is an error, as is
the same path and method twice). Output: sorted keys, indent 2, trailing
newline, so the same inputs always give the same bytes.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from the0.server import __version__

TITLE = "the0 API"
DESCRIPTION = (
    "REST surface of the0's gRPC API, served by Envoy's gRPC-JSON transcoder. JSON field names are "
    "lowerCamelCase; int64 values are strings. Every error is a google.rpc.Status as JSON, "
    "`{code, message, details}` (schema `rpcStatus`), with an HTTP status mapped from the gRPC code "
    "(e.g. INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404, ALREADY_EXISTS/ABORTED 409, "
    "RESOURCE_EXHAUSTED 429, UNAVAILABLE 503); `details` holds a google.rpc.ErrorInfo and, for bad "
    "fields, a google.rpc.BadRequest. Watch streams are newline-delimited JSON. Authenticate with "
    "`authorization: Bearer <JWT>` or an API key (`x-api-key: <key>` or `authorization: ApiKey <key>`); "
    "register, login, refresh and /health are public."
)
SECURITY_DEFINITIONS = {
    "Bearer": {
        "type": "apiKey",
        "in": "header",
        "name": "authorization",
        "description": "A JWT access token: `Bearer <token>`.",
    },
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API key (`the0_...`). `authorization: ApiKey <key>` works too.",
    },
}
# protoc-gen-swagger 1.6.4 documents no error schema; the transcoder's error body is this.
STATUS_DEFINITION = {
    "type": "object",
    "description": "google.rpc.Status: the body of every error response.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "The google.rpc.Code."},
        "message": {"type": "string", "description": "A developer-facing message in English."},
        "details": {
            "type": "array",
            "description": "google.rpc.ErrorInfo, google.rpc.BadRequest, ... each with its `@type`.",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": {},
            },
        },
    },
}
STATUS_REF = "rpcStatus"
STATUS_SCHEMA_REF = f"#/definitions/{STATUS_REF}"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


class MergeError(ValueError):
    pass


def _merge_definitions(
    merged: dict[str, Any], origins: dict[str, str], new: Mapping[str, Any], source: str
) -> None:
    for name, schema in new.items():
        if name in merged and merged[name] != schema:
            raise MergeError(f"definition {name!r} differs between {origins[name]} and {source}")
        merged[name] = schema
        origins.setdefault(name, source)


def _merge_paths(merged: dict[str, Any], new: Mapping[str, Any], source: str) -> None:
    for path, item in new.items():
        target = merged.setdefault(path, {})
        for method, operation in item.items():
            if method in target:
                raise MergeError(f"{method.upper()} {path} in {source} is defined twice")
            target[method] = operation


def _operations(paths: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for item in paths.values():
        for method in HTTP_METHODS:
            if method in item:
                yield item[method]


def merge(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One Swagger 2.0 document from ``{source name: document}``."""
    paths: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    origins: dict[str, str] = {}  # definition name -> first input that had it, for errors
    tags: set[str] = set()
    schemes: set[str] = set()
    for source, doc in sorted(documents.items()):
        if doc.get("swagger") != "2.0":
            raise MergeError(f"{source} is not a Swagger 2.0 document")
        doc = copy.deepcopy(doc)  # operations get a default response below: leave the input alone
        _merge_paths(paths, doc.get("paths", {}), source)
        _merge_definitions(definitions, origins, doc.get("definitions", {}), source)
        tags.update(t["name"] for t in doc.get("tags", []))
        schemes.update(doc.get("schemes", []))

    definitions.setdefault(STATUS_REF, STATUS_DEFINITION)
    operation_ids: dict[str, int] = {}
    for operation in _operations(paths):
        tags.update(operation.get("tags", []))
        if op_id := operation.get("operationId"):
            operation_ids[op_id] = operation_ids.get(op_id, 0) + 1
        error = {"description": "An error (google.rpc.Status).", "schema": {"$ref": STATUS_SCHEMA_REF}}
        operation.setdefault("responses", {}).setdefault("default", error)
    if duplicates := sorted(k for k, n in operation_ids.items() if n > 1):
        raise MergeError(f"operationId used more than once: {', '.join(duplicates)}")

    return {
        "swagger": "2.0",
        "info": {"title": TITLE, "version": __version__, "description": DESCRIPTION},
        "schemes": sorted(schemes) or ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "tags": [{"name": name} for name in sorted(tags)],
        "securityDefinitions": SECURITY_DEFINITIONS,
        "paths": paths,
        "definitions": definitions,
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m the0.server.openapi_merge OUT_FILE IN_FILE...", file=sys.stderr)
        return 2
    out, inputs = Path(args[0]), args[1:]
    try:
        documents = {name: json.loads(Path(name).read_text()) for name in inputs}
        text = render(merge(documents))
    except (OSError, ValueError) as exc:  # MergeError and JSONDecodeError are ValueErrors
        print(f"openapi_merge: {exc}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
