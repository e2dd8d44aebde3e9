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
import sys
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2  # registers the google.api.http extension for parsing
from google.protobuf import descriptor_pb2

DEFAULT_HTTP_PORT = 8080
DEFAULT_ADMIN_PORT = 9901
DEFAULT_GRPC_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_FRONTEND_URL = "http://localhost:3000"
DEFAULT_DESCRIPTOR_PATH = "gen/the0.binpb"

CLUSTER = "the0_grpc"
# The server enforces the real upload limit (10 MB by default, configurable) with a
# proper google.rpc.Status; Envoy's limits only have to stay out of its way.
MAX_BODY_BYTES = 32 * 1024 * 1024
# JSON request bodies (configs are at most 64 KiB): anything larger is refused with 413.
MAX_JSON_BODY_BYTES = 1024 * 1024
BUFFER_FILTER = "envoy.filters.http.buffer"
UPLOAD_PATH = "/api/custom-bots/upload"

MAX_DOWNSTREAM_CONNECTIONS = 50000
DOWNSTREAM_CONNECTIONS_CONFIG = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)

CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = "authorization, content-type, x-api-key, x-request-id, x-grpc-web, grpc-timeout"
CORS_EXPOSE_HEADERS = "grpc-status, grpc-message, x-request-id"

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
            # Without these an unknown path or query parameter reaches the gRPC server
            # raw and the client gets a 503 instead of 404/400. Native gRPC requests
            # (content-type application/grpc) are not transcoded and not affected.
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
            },
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
    }


def _connection_manager(
    descriptor_path: str, services: list[str], frontend_url: str
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
            "virtual_hosts": [
                {
                    "name": "the0",
                    "domains": ["*"],
                    # 0s route timeouts: streams must not be cut (default 15 s).
                    "routes": [
                        # Native gRPC and the raw-zip upload stream through unbuffered:
                        # the server enforces the upload limit as the bytes arrive.
                        {
                            "match": {
                                "prefix": "/",
                                "headers": [
                                    {
                                        "name": "content-type",
                                        "string_match": {"prefix": "application/grpc"},
                                    }
                                ],
                            },
                            "route": {"cluster": CLUSTER, "timeout": "0s"},
                            "typed_per_filter_config": {BUFFER_FILTER: _buffer_disabled()},
                        },
                        {
                            "match": {"path": UPLOAD_PATH},
                            "route": {"cluster": CLUSTER, "timeout": "0s"},
                            "typed_per_filter_config": {BUFFER_FILTER: _buffer_disabled()},
                        },
                        # Everything else is JSON: bodies over MAX_JSON_BODY_BYTES get 413 here.
                        {"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "timeout": "0s"}},
                    ],
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


def _cluster(grpc_host: str, grpc_port: int) -> dict[str, Any]:
    address = {"socket_address": {"address": grpc_host, "port_value": grpc_port}}
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
                        {"endpoint": {"address": address}}
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
) -> str:
    """Envoy v3 YAML: REST + gRPC on ``listen_address:http_port``, admin on 127.0.0.1:admin_port.

    ``services`` defaults to every service in the descriptor set with google.api.http rules.
    ``descriptor_path`` is written as given: a relative path is resolved from Envoy's
    working directory.
    """
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
                                        descriptor_path, list(services), frontend_url
                                    ),
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(grpc_host, grpc_port)],
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
