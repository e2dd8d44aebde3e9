"""Envoy's configuration for the REST surface, rendered from the API contract.

One listener serves both REST (the gRPC-JSON transcoder turns it into gRPC)
and native gRPC (passed through untouched) in front of the gRPC server.
``python -m the0.server.envoy_config`` prints the default configuration;
``make gen`` writes it to ``envoy/envoy.yaml``.

The configuration is a plain dict dumped with ``yaml.safe_dump(sort_keys=False)``:
same arguments, same bytes, so ``make gen-check`` can diff it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2  # registers the google.api.http extension for parsing
from google.protobuf import descriptor_pb2

from the0.server.settings import DEFAULT_MAX_UPLOAD_BYTES

DEFAULT_HTTP_PORT = 8080
DEFAULT_ADMIN_PORT = 9901
DEFAULT_GRPC_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_FRONTEND_URL = "http://localhost:3000"
DEFAULT_DESCRIPTOR_PATH = "gen/the0.binpb"

CLUSTER = "the0_grpc"
# gRPC paths of the internal platform API, refused at the edge (docs/architecture.md).
INTERNAL_API_PREFIX = "/the0.platform.v1."
# The server enforces the real upload limit (10 MB by default, configurable) with a
# proper google.rpc.Status; Envoy's limits only have to stay out of its way.
MAX_BODY_BYTES = 32 * 1024 * 1024
# JSON request bodies (configs are at most 64 KiB): anything larger is refused with 413.
MAX_JSON_BODY_BYTES = 1024 * 1024
BUFFER_FILTER = "envoy.filters.http.buffer"
LUA_FILTER = "envoy.filters.http.lua"
UPLOAD_PATH = "/api/custom-bots/upload"
# Request headers (request line included) above this get 431 at the edge. The gRPC server's
# metadata limit (app.py) is larger: Envoy forwards them and adds its own (x-forwarded-for,
# x-request-id, x-envoy-original-path repeats the path).
MAX_REQUEST_HEADERS_KB = 32

# The REST contract, served by Envoy itself from files (direct responses, read when Envoy loads
# its configuration): the OpenAPI document (`make gen`) and the docs page, whose assets come from
# npm (envoy/docs/package.json, installed by `make docs-assets`). Envoy, not the server: it is the
# process that owns the REST surface and has the files beside its descriptor set; no second
# listener or service is needed in production. Paths relative to the repository (like the
# descriptor set), or absolute.
OPENAPI_JSON = "gen/openapi/the0.openapi.json"
OPENAPI_YAML = "gen/openapi/the0.openapi.yaml"
DOCS_DIR = "envoy/docs"
DOCS_ASSETS = "node_modules/swagger-ui-dist"
# (URL path, file under DOCS_DIR, content type) of the docs page and what it loads.
DOCS_FILES = (
    ("/api/docs", "index.html", "text/html; charset=utf-8"),
    ("/api/docs/swagger-ui-bundle.js", f"{DOCS_ASSETS}/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    ("/api/docs/swagger-ui.css", f"{DOCS_ASSETS}/swagger-ui.css", "text/css; charset=utf-8"),
)
# Envoy's default limit on a direct response body is 4 KiB; the docs bundle is ~1.7 MB.
MAX_DIRECT_RESPONSE_BYTES = 8 * 1024 * 1024

# Envoy's own replies (local replies: unknown route, bad JSON, 413, 431, ...) carry the same
# google.rpc.Status JSON as the server's transcoded errors, with an ErrorInfo in this domain.
ERROR_DOMAIN = "api.the0.dev"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"

MAX_DOWNSTREAM_CONNECTIONS = 50000
DOWNSTREAM_CONNECTIONS_CONFIG = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = "authorization, content-type, x-api-key, x-request-id, x-grpc-web, grpc-timeout"
# The rate-limit fields too (docs/limits.md): a browser's script may read only what is listed.
CORS_EXPOSE_HEADERS = "grpc-status, grpc-message, x-request-id, retry-after, ratelimit, ratelimit-policy"

# One JSON object per request on stdout. Method and path are the client's: the
# transcoder rewrites :method/:path to the gRPC call but keeps the originals in
# x-envoy-original-method/-path. grpc_status is exact for native gRPC calls; for REST
# calls it is derived back from the HTTP status (404 shows as 12), so read `status`.
ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "grpc_method": "%REQ(:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
    "upstream": "%UPSTREAM_HOST%",
}


def _type(name: str) -> str:
    return f"type.googleapis.com/{name}"


def http_services(descriptor_path: str | os.PathLike[str]) -> list[str]:
    """Full names of the services in the descriptor set with at least one google.api.http rule,
    in descriptor order (deterministic: protoc is given the files sorted)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes())
    names = []
    for file in fds.file:
        for service in file.service:
            if any(m.options.HasExtension(annotations_pb2.http) for m in service.method):
                names.append(f"{file.package}.{service.name}" if file.package else service.name)
    return names


# -- REST routes from the google.api.http rules --------------------------------------------------

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def _segment_regex(segment: str) -> str:
    if segment == "**":
        return ".+"
    if segment == "*":
        return "[^/]+"
    return re.escape(segment)


def template_regex(template: str) -> str:
    """RE2 regex for a google.api.http path template (``/api/bots/{id}``, ``{name=shelves/*}``,
    ``{path=**}``, ``:verb``): what the transcoder would match, anchored."""
    verb = ""
    if ":" in template.rsplit("/", 1)[-1] and "}" not in template.rsplit(":", 1)[-1]:
        template, verb = template.rsplit(":", 1)
        verb = re.escape(":" + verb)
    out = []
    for part in re.split(r"(\{[^}]*\})", template):
        if part.startswith("{"):
            pattern = part[1:-1].partition("=")[2] or "*"
            out.append("/".join(_segment_regex(x) for x in pattern.split("/")))
        else:
            out.append("/".join(_segment_regex(x) for x in part.split("/")))
    return "^" + "".join(out) + verb + "$"


def rest_paths(descriptor_path: str | os.PathLike[str], services: list[str]) -> dict[str, set[str]]:
    """Path template regex -> the HTTP methods (upper case) bound to it in ``services``,
    additional bindings included. Templates that differ only in variable names share a regex."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes())
    paths: dict[str, set[str]] = {}
    for file in fds.file:
        for service in file.service:
            if (f"{file.package}.{service.name}" if file.package else service.name) not in services:
                continue
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    kind = binding.WhichOneof("pattern")
                    if kind in _HTTP_METHODS:
                        verb, template = kind.upper(), getattr(binding, kind)
                    elif kind == "custom":
                        verb, template = binding.custom.kind.upper(), binding.custom.path
                    else:
                        continue
                    paths.setdefault(template_regex(template), set()).add(verb)
    return paths


def _literal(regex: str) -> str | None:
    """The one path a regex from template_regex matches, if it has no variables."""
    body = regex[1:-1]
    if "[^/]" in body or ".+" in body:
        return None
    return re.sub(r"\\(.)", r"\1", body)


def _allow(paths: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(regex, Allow header value) per template, literal templates first: a literal path
    (``/api/custom-bots/upload``) also accepts what a variable template matching it allows."""
    literal = sorted(r for r in paths if _literal(r) is not None)
    variable = sorted(r for r in paths if _literal(r) is None)
    out = []
    for regex in literal + variable:
        methods = set(paths[regex])
        if (path := _literal(regex)) is not None:
            for other, verbs in paths.items():
                if re.fullmatch(other[1:-1], path):
                    methods |= verbs
        out.append((regex, ", ".join(sorted(methods))))
    return out


# -- Envoy's own replies as JSON -------------------------------------------------------------


def _cel(expression: str) -> dict[str, Any]:
    return {
        "extension_filter": {
            "name": CEL_FILTER,
            "typed_config": {
                "@type": _type("envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"),
                "expression": expression,
            },
        }
    }


def _status_json(
    code: int, reason: str, message: str, *, request_id: bool = True, **metadata: str
) -> dict[str, Any]:
    """google.rpc.Status with one ErrorInfo, like the server's errors through the transcoder:
    metadata ``requestId`` is the x-request-id (the client's, or the one Envoy generated)."""
    if request_id:
        metadata = {"requestId": "%REQ(X-REQUEST-ID)%", **metadata}
    return {
        "json_format": {
            "code": code,
            "message": message,
            "details": [
                {
                    "@type": _type("google.rpc.ErrorInfo"),
                    "reason": reason,
                    "domain": ERROR_DOMAIN,
                    "metadata": metadata,
                }
            ],
        },
        "json_format_options": {"sort_properties": False},
    }


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


# The transcoder's own failures: response code details are
# early_grpc_json_transcode_failure{CODE} (headers: path, method, query) and
# grpc_json_transcode_failure{CODE} (the JSON body). Their texts name proto types, so none
# is passed through.
EARLY_TRANSCODE_FAILURE = "early_grpc_json_transcode_failure{INVALID_ARGUMENT}"
BODY_TRANSCODE_FAILURE = "grpc_json_transcode_failure{INVALID_ARGUMENT}"


def _local_reply_config(max_upload_bytes: int) -> dict[str, Any]:
    """Mappers for REST requests only (native gRPC local replies keep their grpc-status);
    the first that matches rewrites the body. Upstream (server) errors are not local replies
    and are never touched."""
    # REST: not gRPC, or gRPC only because the transcoder made it so (it keeps the path).
    rest = (
        "(!('content-type' in request.headers)"
        " || !request.headers['content-type'].startsWith('application/grpc')"
        " || 'x-envoy-original-path' in request.headers)"
    )

    def mapper(condition: str, body: dict[str, Any], status: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"filter": _cel(f"({condition}) && {rest}")}
        if status is not None:
            out["status_code"] = status
        out["body_format_override"] = body
        return out

    upload = "xds.route_name == 'upload_too_large'"
    return {
        "mappers": [
            mapper(
                f"response.code_details == '{EARLY_TRANSCODE_FAILURE}'",
                _status_json(3, "UNKNOWN_QUERY_PARAMETER",
                             "a query parameter is unknown to this method or has an invalid value"),
            ),
            mapper(
                f"response.code_details == '{BODY_TRANSCODE_FAILURE}'",
                _status_json(3, "MALFORMED_JSON",
                             "the request body is not valid JSON for this method, or a field has the wrong type"),
            ),
            mapper(
                f"response.code == 413 && {upload}",
                _status_json(8, "BODY_TOO_LARGE",
                             f"the archive is larger than the upload limit of {_size(max_upload_bytes)}",
                             limit=str(max_upload_bytes)),
            ),
            mapper(
                "response.code == 413",
                _status_json(8, "BODY_TOO_LARGE",
                             f"the request body is larger than the limit of {_size(MAX_JSON_BODY_BYTES)}",
                             limit=str(MAX_JSON_BODY_BYTES)),
            ),
            mapper(
                "response.code == 431",
                _status_json(8, "HEADERS_TOO_LARGE",
                             "the request headers (URL included) are larger than the limit of "
                             f"{MAX_REQUEST_HEADERS_KB} KiB",
                             # Over HTTP/1.1 the headers were never parsed: there is no request id.
                             request_id=False, limit=str(MAX_REQUEST_HEADERS_KB * 1024)),
            ),
            mapper(
                "response.code == 405",
                _status_json(12, "METHOD_NOT_ALLOWED",
                             "this path does not accept %REQ(:METHOD)%; the Allow header lists the methods it does"),
            ),
            mapper(
                "response.code == 404",
                _status_json(5, "UNKNOWN_PATH", "no API route matches this path"),
            ),
            mapper(
                "response.code == 502",
                _status_json(13, "INTERNAL", "the API server's answer could not be passed on; "
                             "quote the request id when reporting it"),
            ),
            mapper(
                "response.code == 503",
                _status_json(14, "DEPENDENCY_UNAVAILABLE", "the API server is unavailable; retry later"),
            ),
            mapper(
                "response.code == 504",
                _status_json(4, "DEADLINE_EXCEEDED", "the API server did not answer in time; retry later"),
            ),
            mapper(
                "response.code == 400",
                _status_json(3, "MALFORMED_REQUEST", "the request could not be parsed"),
            ),
        ]
    }


# Runs on the upload route only. Over the limit a streamed (chunked) upload is stopped by the
# server with RESOURCE_EXHAUSTED/TOO_LARGE, which the transcoder can only map to 429 (its table
# is fixed): for an upload that is the wrong signal (429 invites a retry), 413 is right.
# A rate limit (429, RATE_LIMITED) is left alone.
UPLOAD_LUA = """\
function envoy_on_response(handle)
  if handle:headers():get(":status") ~= "429" then
    return
  end
  local marker = handle:headers():get("x-the0-error-reason")
  if marker == nil then
    local body = handle:body()
    if body ~= nil then
      local text = body:getBytes(0, body:length())
      if string.find(text, '"reason":"TOO_LARGE"', 1, true) or
         string.find(text, '"reason":"BODY_TOO_LARGE"', 1, true) then
        marker = "BODY_TOO_LARGE"
      end
    end
  end
  if marker == "TOO_LARGE" or marker == "BODY_TOO_LARGE" then
    handle:headers():replace(":status", "413")  -- headers() again: body() ended the old object's scope
  end
end
"""


def _transcoder(descriptor_path: str, services: list[str]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": _type("envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"),
            "proto_descriptor": descriptor_path,
            "services": services,
            # gRPC errors become HTTP status + JSON google.rpc.Status {code, message, details};
            # the descriptor set includes error_details.proto so details render.
            "convert_grpc_status": True,
            "print_options": {
                "always_print_primitive_fields": True,
                # Watch streams reach HTTP/1.1 clients as newline-delimited JSON.
                "stream_newline_delimited": True,
                "preserve_proto_field_names": False,
            },
            # An unknown query parameter is refused (400). A path/method the transcoder does
            # not know passes through untranscoded: the routes (generated from the same rules)
            # answer it with 405 + Allow or 404. Native gRPC requests (content-type
            # application/grpc) are not transcoded and not affected.
            "request_validation_options": {
                "reject_unknown_method": False,
                "reject_unknown_query_parameters": True,
            },
            # Route on the client's REST path and method, not on the gRPC path the transcoder
            # rewrites it to: the routes below know the REST surface.
            "match_incoming_request_route": True,
            # Defaults (1 MiB) would 413 custom-bot uploads (HttpBody, 10 MB+).
            "max_request_body_size": MAX_BODY_BYTES,
            "max_response_body_size": MAX_BODY_BYTES,
        },
    }


def _buffer_disabled() -> dict[str, Any]:
    return {"@type": _type("envoy.extensions.filters.http.buffer.v3.BufferPerRoute"), "disabled": True}


def _cors_policy(frontend_url: str) -> dict[str, Any]:
    return {
        "@type": _type("envoy.extensions.filters.http.cors.v3.CorsPolicy"),
        "allow_origin_string_match": [{"exact": frontend_url}],
        "allow_methods": CORS_ALLOW_METHODS,
        "allow_headers": CORS_ALLOW_HEADERS,
        "expose_headers": CORS_EXPOSE_HEADERS,
        "max_age": "86400",
        "allow_credentials": True,
        # A preflight from another origin is answered here (without CORS headers), never
        # forwarded: the server has no OPTIONS methods.
        "forward_not_matching_preflights": False,
    }


def _direct(status: int, body: str) -> dict[str, Any]:
    return {"status": status, "body": {"inline_string": body}}


def _file_route(path: str, filename: str, content_type: str) -> dict[str, Any]:
    return {
        "name": f"file {path}",
        "match": {"path": path, "headers": [
            {"name": ":method", "string_match": {"safe_regex": {"regex": "^(GET|HEAD)$"}}}]},
        "direct_response": {"status": 200, "body": {"filename": filename}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            # The files change with a deploy: a browser asks again (cheap, they are in memory).
            {"header": {"key": "cache-control", "value": "no-cache"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ],
        "typed_per_filter_config": {BUFFER_FILTER: _buffer_disabled()},
    }


def _contract_routes(openapi_dir: str, docs_dir: str) -> list[dict[str, Any]]:
    """GET /api/openapi.json, /api/openapi.yaml and the docs page /api/docs (public)."""
    routes = [
        _file_route("/api/openapi.json", f"{openapi_dir}/{Path(OPENAPI_JSON).name}", "application/json"),
        _file_route("/api/openapi.yaml", f"{openapi_dir}/{Path(OPENAPI_YAML).name}",
                    "application/yaml; charset=utf-8"),
    ]
    routes += [_file_route(path, f"{docs_dir}/{name}", kind) for path, name, kind in DOCS_FILES]
    return routes


def _routes(paths: dict[str, set[str]], max_upload_bytes: int,
            contract_routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """0s route timeouts: streams must not be cut (default 15 s)."""
    upstream = {"cluster": CLUSTER, "timeout": "0s"}
    routes: list[dict[str, Any]] = [
        # The platform's internal API (the0.platform.v1: runtime, analyzer) is never served on
        # the public edge, for gRPC or REST alike: its services call the server's gRPC port on
        # the private network. Before the gRPC passthrough, so a gRPC client gets HTTP 404,
        # which gRPC reads as UNIMPLEMENTED.
        {
            "name": "internal_api_refused",
            "match": {"prefix": INTERNAL_API_PREFIX},
            "direct_response": _direct(404, "unknown path"),
            "typed_per_filter_config": {BUFFER_FILTER: _buffer_disabled()},
        },
        # Native gRPC streams through unbuffered.
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
            },
            "route": upstream,
            "typed_per_filter_config": {BUFFER_FILTER: _buffer_disabled()},
        },
        # CORS preflights: the CORS filter answers them, but only on a route to a cluster
        # (it skips direct responses), so they must not reach the 405/404 routes below.
        {
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": ":method", "string_match": {"exact": "OPTIONS"}},
                    {"name": "origin", "present_match": True},
                    {"name": "access-control-request-method", "present_match": True},
                ],
            },
            "route": upstream,
        },
        # An upload whose content-length is over the server's limit is refused before a byte
        # is forwarded (a chunked one is stopped by the server as it arrives).
        {
            "name": "upload_too_large",
            "match": {
                "path": UPLOAD_PATH,
                "headers": [
                    {"name": ":method", "string_match": {"exact": "POST"}},
                    {"name": "content-length", "range_match": {"start": max_upload_bytes + 1, "end": 2**63 - 1}},
                ],
            },
            "direct_response": _direct(413, "upload too large"),
            # Answered at the headers, not after the buffer filter has read 1 MiB.
            "typed_per_filter_config": {BUFFER_FILTER: _buffer_disabled()},
        },
        # The raw-zip upload streams through unbuffered: the server enforces the limit as
        # the bytes arrive; the Lua script turns its RESOURCE_EXHAUSTED (429) into 413.
        {
            "match": {"path": UPLOAD_PATH, "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]},
            "route": upstream,
            "typed_per_filter_config": {
                BUFFER_FILTER: _buffer_disabled(),
                LUA_FILTER: {"@type": _type("envoy.extensions.filters.http.lua.v3.LuaPerRoute"), "name": "upload"},
            },
        },
    ]
    routes += contract_routes
    # Every REST route with its methods (JSON: bodies over MAX_JSON_BODY_BYTES get 413 here).
    for regex, methods in sorted(paths.items()):
        routes.append({
            "match": {
                "safe_regex": {"regex": regex},
                "headers": [{"name": ":method", "string_match": {"safe_regex": {
                    "regex": "^(" + "|".join(sorted(methods)) + ")$"}}}],
            },
            "route": upstream,
        })
    # A known path with another method: 405 with Allow. CORS preflights never get here (the
    # CORS filter answers them).
    for regex, allow in _allow(paths):
        routes.append({
            "match": {"safe_regex": {"regex": regex}},
            "direct_response": _direct(405, "method not allowed"),
            "response_headers_to_add": [{"header": {"key": "allow", "value": allow}}],
        })
    routes.append({"match": {"prefix": "/"}, "direct_response": _direct(404, "unknown path")})
    return routes


# Runs on every request. gRPC metadata keys are [0-9a-z_.-] only; grpcio refuses a request
# carrying any other header name (m', a|b) with INTERNAL "Illegal header key" before our code
# runs. Such a header cannot be one the API reads, so the edge drops it instead of failing the call.
METADATA_KEYS_FILTER = "the0.metadata_keys"
METADATA_KEYS_LUA = """\
function envoy_on_request(handle)
  local illegal = {}
  for name, _ in pairs(handle:headers()) do
    if name:sub(1, 1) ~= ":" and not name:find("^[0-9a-z_.-]+$") then
      illegal[#illegal + 1] = name
    end
  end
  for _, name in ipairs(illegal) do
    handle:headers():remove(name)
  end
end
"""


def _metadata_keys_lua() -> dict[str, Any]:
    return {
        "name": METADATA_KEYS_FILTER,
        "typed_config": {
            "@type": _type("envoy.extensions.filters.http.lua.v3.Lua"),
            "default_source_code": {"inline_string": METADATA_KEYS_LUA},
        },
    }


def _upload_lua() -> dict[str, Any]:
    return {
        "name": LUA_FILTER,
        "typed_config": {
            "@type": _type("envoy.extensions.filters.http.lua.v3.Lua"),
            # No default script: it runs only where a route names it.
            "source_codes": {"upload": {"inline_string": UPLOAD_LUA}},
        },
    }


def _connection_manager(
    descriptor_path: str,
    services: list[str],
    frontend_url: str,
    paths: dict[str, set[str]],
    max_upload_bytes: int,
    contract_routes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "@type": _type(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        ),
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",  # HTTP/1.1 for browsers and curl, h2c for gRPC clients
        # Envoy is the edge: it appends the peer to x-forwarded-for (the server's per-address
        # rate limits read it) and generates x-request-id when absent, but keeps the client's.
        "use_remote_address": True,
        "generate_request_id": True,
        "preserve_external_request_id": True,
        # Echo it to clients (REST clients cannot read gRPC trailers) so they can quote it.
        "always_set_request_id_in_response": True,
        "normalize_path": True,
        "merge_slashes": True,
        # Explicit (default 60): the gRPC server's metadata limit must stay above it, or an
        # oversized header reaches the server and comes back as 429.
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "local_reply_config": _local_reply_config(max_upload_bytes),
        # Watch streams live for hours: no overall request timeout; an idle stream is cut
        # after 5 min, well above the server's heartbeat (at least every 30 s).
        "request_timeout": "0s",
        "stream_idle_timeout": "300s",
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": _type("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"),
                    "log_format": {
                        "json_format": ACCESS_LOG_FORMAT,
                        "json_format_options": {"sort_properties": False},
                    },
                },
            }
        ],
        "route_config": {
            "name": "the0",
            "max_direct_response_body_size_bytes": MAX_DIRECT_RESPONSE_BYTES,
            "virtual_hosts": [
                {
                    "name": "the0",
                    "domains": ["*"],
                    "routes": _routes(paths, max_upload_bytes, contract_routes),
                    "typed_per_filter_config": {"envoy.filters.http.cors": _cors_policy(frontend_url)},
                }
            ],
        },
        "http_filters": [
            # CORS first: preflights are answered before the transcoder would 404 them.
            {
                "name": "envoy.filters.http.cors",
                "typed_config": {"@type": _type("envoy.extensions.filters.http.cors.v3.Cors")},
            },
            # Before the transcoder: on the way back it sees the transcoded HTTP response.
            _upload_lua(),
            _metadata_keys_lua(),
            {
                "name": BUFFER_FILTER,
                "typed_config": {
                    "@type": _type("envoy.extensions.filters.http.buffer.v3.Buffer"),
                    "max_request_bytes": MAX_JSON_BODY_BYTES,
                },
            },
            _transcoder(descriptor_path, services),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _type("envoy.extensions.filters.http.router.v3.Router")},
            },
        ],
    }


def _cluster(grpc_host: str, grpc_port: int, extra_grpc_ports: tuple[int, ...] = ()) -> dict[str, Any]:
    addresses = [{"socket_address": {"address": grpc_host, "port_value": port}}
                 for port in (grpc_port, *extra_grpc_ports)]
    return {
        "name": CLUSTER,
        # STRICT_DNS: grpc_host may be one DNS name for several replicas (every address
        # becomes a host, re-resolved periodically) or a plain IP.
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _type("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Detects a dead replica on long-lived watch connections.
                        "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                    }
                },
            }
        },
        # Envoy's default of 1024 concurrent requests per cluster is below the number of
        # watch streams a few replicas hold open.
        "circuit_breakers": {
            "thresholds": [
                {"max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}
            ]
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "5s",
                # Without it Envoy checks a cluster without traffic only every 60 s
                # (and a fresh one appears to be checked just once).
                "no_traffic_interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                # Standard grpc.health.v1.Health, overall server status ("").
                "grpc_health_check": {"service_name": ""},
            }
        ],
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": address}} for address in addresses
                    ]
                }
            ],
        },
    }


def render_envoy_config(
    *,
    http_port: int,
    admin_port: int,
    grpc_host: str,
    grpc_port: int,
    frontend_url: str,
    descriptor_path: str,
    services: list[str] | None = None,
    listen_address: str = "0.0.0.0",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    openapi_dir: str | None = None,
    docs_dir: str | None = None,
    extra_grpc_ports: tuple[int, ...] = (),
) -> str:
    """Envoy v3 YAML: REST + gRPC on ``listen_address:http_port``, admin on 127.0.0.1:admin_port.

    ``services`` defaults to every service in the descriptor set with google.api.http rules.
    ``descriptor_path`` is written as given: a relative path is resolved from Envoy's
    working directory. ``max_upload_bytes`` is the server's ``THE0_MAX_UPLOAD_BYTES``: an
    upload declaring a larger content-length gets 413 here. ``openapi_dir`` (the OpenAPI
    document) and ``docs_dir`` (the docs page, its npm assets installed) default to their
    places beside the descriptor set: ``gen/openapi`` and ``envoy/docs`` of the same checkout.
    """
    root = Path(descriptor_path).parent.parent
    openapi_dir = openapi_dir or str(root / Path(OPENAPI_JSON).parent)
    docs_dir = docs_dir or str(root / DOCS_DIR)
    if services is None:
        services = http_services(descriptor_path)
    if not services:
        raise ValueError(f"no service with google.api.http rules in {descriptor_path}")
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "the0",
                    "address": {"socket_address": {"address": listen_address, "port_value": http_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": _connection_manager(
                                        descriptor_path,
                                        list(services),
                                        frontend_url,
                                        rest_paths(descriptor_path, list(services)),
                                        max_upload_bytes,
                                        _contract_routes(openapi_dir, docs_dir),
                                    ),
                                }
                            ]
                        }
                    ],
                }
            ],
            # extra_grpc_ports: more replicas on grpc_host (make run REPLICAS=N).
            "clusters": [_cluster(grpc_host, grpc_port, extra_grpc_ports)],
        },
        # A bound on open client connections (watchers hold theirs for hours); Envoy
        # warns at start-up without one.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _type(DOWNSTREAM_CONNECTIONS_CONFIG),
                        "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
    }
    header = "# Generated by `python -m the0.server.envoy_config` (make gen). Do not edit.\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def main() -> None:
    sys.stdout.write(
        render_envoy_config(
            http_port=DEFAULT_HTTP_PORT,
            admin_port=DEFAULT_ADMIN_PORT,
            grpc_host=DEFAULT_GRPC_HOST,
            grpc_port=DEFAULT_GRPC_PORT,
            frontend_url=DEFAULT_FRONTEND_URL,
            descriptor_path=DEFAULT_DESCRIPTOR_PATH,
        )
    )


if __name__ == "__main__":
    main()
