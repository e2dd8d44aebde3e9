"""The OpenAPI 3.1 document of the REST surface, generated from the descriptor set.

    python -m the0.server.openapi gen/the0.binpb gen/openapi

writes ``the0.openapi.json`` and ``the0.openapi.yaml`` (``make gen``). Everything in the document
comes from the protos, so a new RPC or field appears without a hand edit:

- routes from ``google.api.http`` (additional bindings too); path variables are named by their last
  field (``{bot.id}`` is ``{id}``: the URL is the same, tools that format paths need plain names);
  the request fields neither in the path nor in the body are query parameters (``updateMask``);
- security from ``(the0.common.v1.auth_policy)``; the scope an API key needs (``x-the0-scope`` and a
  sentence in the description) from ``(the0.common.v1.access)``; raw bodies and media types from
  ``google.api.HttpBody`` and ``(the0.common.v1.http_body_media_type)``; server streams are NDJSON
  (Envoy's ``stream_newline_delimited``), one message per line;
- ``required``/``readOnly``/``writeOnly`` from ``google.api.field_behavior``; lengths, patterns,
  ranges and formats from the ``buf.validate`` rules the server's input gate evaluates
  (input_gate.py), so each limit is written once, in the proto;
- the error responses from the codes listed in each RPC's ``Errors:`` comment plus those every
  call can get (bad input, rate limit, dependency down; no credentials unless public).

The internal platform API (``the0.platform.v1``) never appears. Output is deterministic: the
descriptor set's order (protoc is given the files sorted), components sorted by name.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from buf.validate import validate_pb2
from the0.common.v1 import access_pb2, auth_policy_pb2, rest_media_pb2
from the0.server import __version__
from the0.server.envoy_config import ERROR_DOMAIN, INTERNAL_API_PREFIX
from the0.server.identity import scopes

Schema = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto

TITLE = "the0 API"
JSON_FILE = "the0.openapi.json"
YAML_FILE = "the0.openapi.yaml"
INTERNAL_PACKAGES = (INTERNAL_API_PREFIX.strip("/").rstrip("."),)
NDJSON = "application/x-ndjson"
HTTP_BODY = ".google.api.HttpBody"

DESCRIPTION = f"""\
REST surface of the0's gRPC API, served by Envoy's gRPC-JSON transcoder and generated from the protos.

- JSON field names are lowerCamelCase; 64-bit integers are strings; enums are their names.
- Authenticate with `authorization: Bearer <access token>` (from register, login or refresh) or an API
  key (`authorization: ApiKey <key>` or `x-api-key: <key>`). Each operation's `security` says which it
  accepts: `[]` is public; session-only operations list Bearer alone.
- API keys have scopes (`full`, `read`, `<resource>:read`, `<resource>:write`). An operation open to API
  keys names the narrowest scope it needs in `x-the0-scope` (`bots:write`); a key without a scope that
  covers it gets 403 with reason `API_KEY_SCOPE`.
- Every error is a `google.rpc.Status` as JSON, `{{code, message, details}}` (schema `Status`), whether
  the server or Envoy wrote it. `details` holds a `google.rpc.ErrorInfo` (domain `{ERROR_DOMAIN}`;
  branch on its `reason`, never on `message`; `metadata.requestId` is the request id) and, for bad
  fields, a `google.rpc.BadRequest` with one violation per field; rate limits add a
  `google.rpc.RetryInfo`. Every response carries the request id as `x-request-id`.
- Watch and log streams answer `application/x-ndjson`: one JSON message per line (the schema of
  the 200 response is the schema of one line). Errors after the first line cannot change the HTTP
  status: the stream's last message says why it ends (`deleted`, `unauthenticated`).
- Lists are paged: `pageSize` (0 means the default) and the previous page's `nextPageToken`.
"""

# gRPC code names (as the proto comments write them) -> the transcoder's HTTP status.
_HTTP_STATUS_OF_CODE = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "DATA_LOSS": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_RESPONSES = {
    400: ("BadRequest", ("Invalid input (VALIDATION_FAILED with a BadRequest naming each field, "
                        "MALFORMED_JSON, UNKNOWN_QUERY_PARAMETER, ...) or a wrong state "
                        "(FAILED_PRECONDITION: INVALID_STATE, ...).")),
    401: ("Unauthenticated", ("No or bad credentials: TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED "
                             "(refresh the token), TOKEN_REVOKED, API_KEY_INVALID, ...")),
    403: ("PermissionDenied", ("Authenticated but not allowed: PERMISSION_DENIED, API_KEY_NOT_ALLOWED "
                              "(this operation needs a user session).")),
    404: ("NotFound", "The resource does not exist or is not the caller's (indistinguishable)."),
    409: ("Conflict", "ALREADY_EXISTS, or ETAG_MISMATCH (ABORTED): the etag sent is not current."),
    413: ("PayloadTooLarge", "BODY_TOO_LARGE: the body is over the limit (`metadata.limit`, bytes)."),
    429: ("TooManyRequests", ("RATE_LIMITED (with RetryInfo and `Retry-After`), QUOTA_EXCEEDED, "
                             "TOO_MANY_STREAMS, TOO_LARGE, ...")),
    500: ("InternalError", "DATA_LOSS or a bug; quote `metadata.requestId`."),
    503: ("Unavailable", ("A dependency (database, NATS, object store) or every server replica is "
                         "down: DEPENDENCY_UNAVAILABLE. Retry later.")),
    504: ("DeadlineExceeded", "A dependency or the server did not answer in time; retry later."),
}

_SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    # proto3 JSON writes 64-bit integers as strings.
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

# Well-known types have their own JSON forms (proto3 JSON mapping).
_WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
                                  "description": "A duration in seconds, e.g. `1.5s`."},
    ".google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamelCase field paths."},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                             "required": ["@type"], "additionalProperties": True},
    ".google.protobuf.StringValue": {"type": "string"},
    ".google.protobuf.BoolValue": {"type": "boolean"},
    ".google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
    ".google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    ".google.protobuf.DoubleValue": {"type": "number"},
    ".google.protobuf.FloatValue": {"type": "number"},
    ".google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
}

# The detail types an error's `details` may hold (google/rpc/error_details.proto).
_ERROR_DETAILS = (
    ".google.rpc.ErrorInfo", ".google.rpc.BadRequest", ".google.rpc.RetryInfo",
    ".google.rpc.QuotaFailure", ".google.rpc.PreconditionFailure", ".google.rpc.ResourceInfo",
    ".google.rpc.DebugInfo", ".google.rpc.Help", ".google.rpc.LocalizedMessage",
)
_UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# A CEL rule of this shape is a regex the document can state.
_CEL_MATCHES = re.compile(r"^this\.matches\('((?:[^'\\]|\\.)*)'\)$")


class _Descriptors:
    """The descriptor set indexed by full name (``.pkg.Message``), with comments."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = list(fds.file)
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}  # full name (fields: message.field) -> leading comment
        for file in self.files:
            prefix = f".{file.package}" if file.package else ""
            locations = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
            for index, message in enumerate(file.message_type):
                self._message(message, f"{prefix}.{message.name}", (4, index), locations)
            for index, enum in enumerate(file.enum_type):
                self._enum(enum, f"{prefix}.{enum.name}", (5, index), locations)
            for s_index, service in enumerate(file.service):
                name = f"{prefix}.{service.name}"
                self.comments[name] = _clean(locations.get((6, s_index), ""))
                for m_index, method in enumerate(service.method):
                    self.comments[f"{name}.{method.name}"] = _clean(locations.get((6, s_index, 2, m_index), ""))

    def _message(self, message: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...],
                 locations: dict[tuple[int, ...], str]) -> None:
        self.messages[name] = message
        self.comments[name] = _clean(locations.get(path, ""))
        for index, field in enumerate(message.field):
            self.comments[f"{name}.{field.name}"] = _clean(locations.get((*path, 2, index), ""))
        for index, nested in enumerate(message.nested_type):
            self._message(nested, f"{name}.{nested.name}", (*path, 3, index), locations)
        for index, enum in enumerate(message.enum_type):
            self._enum(enum, f"{name}.{enum.name}", (*path, 4, index), locations)

    def _enum(self, enum: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...],
              locations: dict[tuple[int, ...], str]) -> None:
        self.enums[name] = enum
        self.comments[name] = _clean(locations.get(path, ""))
        for index, value in enumerate(enum.value):
            self.comments[f"{name}.{value.name}"] = _clean(locations.get((*path, 2, index), ""))

    def public_services(self) -> Iterator[tuple[str, descriptor_pb2.ServiceDescriptorProto]]:
        for file in self.files:
            if file.package.startswith(INTERNAL_PACKAGES):
                continue
            for service in file.service:
                if any(m.options.HasExtension(annotations_pb2.http) for m in service.method):
                    yield f".{file.package}.{service.name}", service


def _clean(comment: str) -> str:
    """A proto comment as Markdown: leading spaces of each line off, paragraphs kept."""
    return "\n".join(line.strip() for line in comment.strip().splitlines())


def _behaviors(field: FieldProto) -> set[int]:
    return set(field.options.Extensions[field_behavior_pb2.field_behavior])


def _is_map(d: _Descriptors, field: FieldProto) -> bool:
    entry = d.messages.get(field.type_name)
    return bool(entry and entry.options.map_entry)


class _Builder:
    def __init__(self, descriptors: _Descriptors) -> None:
        self.d = descriptors
        self.schemas: dict[str, Schema] = {}
        self._names = self._component_names()

    # -- names ------------------------------------------------------------------------------

    def _component_names(self) -> dict[str, str]:
        """Full name -> component name: the short name (nested: Outer.Inner -> OuterInner) where it
        is unique, else with its package in front (``BotV1Config``)."""
        short: dict[str, list[str]] = {}
        for full in [*self.d.messages, *self.d.enums]:
            package = next(f.package for f in self.d.files if full.startswith(f".{f.package}."))
            local = full[len(package) + 2:].replace(".", "")
            short.setdefault(local, []).append(full)
        names = {}
        for local, fulls in short.items():
            for full in fulls:
                if len(fulls) == 1:
                    names[full] = local
                else:
                    package = next(f.package for f in self.d.files if full.startswith(f".{f.package}."))
                    names[full] = "".join(p.capitalize() for p in package.split(".")[1:]) + local
        return names

    def ref(self, full_name: str) -> Schema:
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        name = self._names[full_name]
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive messages refer to themselves
            if full_name in self.d.enums:
                self.schemas[name] = self._enum_schema(full_name)
            else:
                self.schemas[name] = self._message_schema(full_name)
        return {"$ref": f"#/components/schemas/{name}"}

    # -- schemas ----------------------------------------------------------------------------

    def _enum_schema(self, full_name: str) -> Schema:
        enum = self.d.enums[full_name]
        lines = [self.d.comments[full_name]] if self.d.comments[full_name] else []
        for value in enum.value:
            text = self.d.comments.get(f"{full_name}.{value.name}", "").replace("\n", " ")
            lines.append(f"- `{value.name}`" + (f": {text}" if text else ""))
        return {"type": "string", "enum": [v.name for v in enum.value], "description": "\n".join(lines)}

    def _message_schema(self, full_name: str, *, omit: Iterable[str] = ()) -> Schema:
        message = self.d.messages[full_name]
        skip = set(omit)
        properties: Schema = {}
        required = []
        for field in message.field:
            if field.name in skip:
                continue
            properties[field.json_name] = self.field_schema(field, f"{full_name}.{field.name}")
            if field_behavior_pb2.REQUIRED in _behaviors(field):
                required.append(field.json_name)
            elif not full_name.startswith(".google."):
                # proto3 JSON reads `null` as "not set": true of every optional field.
                properties[field.json_name] = _nullable(properties[field.json_name])
        schema: Schema = {"type": "object"}
        if self.d.comments.get(full_name):
            schema["description"] = self.d.comments[full_name]
        oneofs = [o.name for i, o in enumerate(message.oneof_decl)
                  if not any(f.proto3_optional for f in message.field if f.HasField("oneof_index")
                             and f.oneof_index == i)]
        if oneofs and len(oneofs) == 1 and all(f.HasField("oneof_index") for f in message.field):
            # A message that is one oneof (a stream's events): exactly one member is set.
            schema["minProperties"] = 1
            schema["maxProperties"] = 1
        schema["properties"] = properties
        if required:
            schema["required"] = required
        # Unknown fields are ignored (proto3 JSON), but the transcoder refuses an empty name.
        schema["propertyNames"] = {"minLength": 1}
        return schema

    def field_schema(self, field: FieldProto, comment_key: str) -> Schema:
        rules = field.options.Extensions[validate_pb2.field]
        if _is_map(self.d, field):
            entry = self.d.messages[field.type_name]
            schema: Schema = {"type": "object",
                              "additionalProperties": self._single(entry.field[1], rules.map.values)}
        elif field.label == FieldProto.LABEL_REPEATED:
            schema = {"type": "array", "items": self._single(field, rules.repeated.items)}
            if rules.repeated.HasField("max_items"):
                schema["maxItems"] = rules.repeated.max_items
            if rules.repeated.HasField("min_items"):
                schema["minItems"] = rules.repeated.min_items
        else:
            schema = self._single(field, rules)
        if field_behavior_pb2.REQUIRED in _behaviors(field):
            schema = _non_empty(schema, field, self.d)
        description = self.d.comments.get(comment_key, "")
        if description:
            schema["description"] = description
        behaviors = _behaviors(field)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            schema["writeOnly"] = True
        return schema

    def _single(self, field: FieldProto, rules: validate_pb2.FieldRules) -> Schema:
        """One value of ``field`` (an item if repeated) under ``rules``."""
        if field.type in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_GROUP):
            return self.ref(field.type_name)
        if field.type == FieldProto.TYPE_ENUM:
            schema = self.ref(field.type_name)
            allowed = getattr(rules.enum, "in")  # `in` is a Python keyword
            if allowed or rules.enum.not_in:
                names = [v.name for v in self.d.enums[field.type_name].value
                         if (not allowed or v.number in allowed)
                         and v.number not in rules.enum.not_in]
                schema = {"allOf": [schema], "enum": names}
            return schema
        schema = dict(_SCALARS[field.type])
        ignore_empty = rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE
        if field.type == FieldProto.TYPE_STRING:
            # The input gate refuses NUL in every string (PostgreSQL text cannot hold it).
            schema["pattern"] = "^[^\\u0000]*$"
            schema.update(_string_rules(rules.string, ignore_empty))
            for cel in rules.cel:
                if match := _CEL_MATCHES.match(cel.expression):
                    pattern = match.group(1).replace("\\\\", "\\")
                    schema["pattern"] = f"^$|{pattern}" if ignore_empty else pattern
        elif field.type in (FieldProto.TYPE_INT32, FieldProto.TYPE_SINT32, FieldProto.TYPE_SFIXED32):
            kind = {FieldProto.TYPE_INT32: "int32", FieldProto.TYPE_SINT32: "sint32",
                    FieldProto.TYPE_SFIXED32: "sfixed32"}[field.type]
            schema.update(_range(getattr(rules, kind)))
        elif field.type in (FieldProto.TYPE_DOUBLE, FieldProto.TYPE_FLOAT):
            schema.update(_range(getattr(rules, "double" if field.type == FieldProto.TYPE_DOUBLE else "float")))
        return schema

    # -- operations -------------------------------------------------------------------------

    def operations(self) -> dict[str, dict[str, Any]]:
        paths: dict[str, dict[str, Any]] = {}
        for service_name, service in self.d.public_services():
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                bindings = [rule, *rule.additional_bindings]
                for index, binding in enumerate(bindings):
                    verb, template = _pattern(binding)
                    path, variables = _path(template)
                    operation = self._operation(service_name, service, method, binding, variables, index)
                    if verb in paths.setdefault(path, {}):
                        raise ValueError(f"{verb.upper()} {path} is bound twice")
                    paths[path][verb] = operation
        return paths

    def _operation(self, service_name: str, service: descriptor_pb2.ServiceDescriptorProto,
                   method: descriptor_pb2.MethodDescriptorProto, binding: http_pb2.HttpRule,
                   variables: list[tuple[str, str]], index: int) -> dict[str, Any]:
        full = f"{service_name}.{method.name}"
        comment = self.d.comments.get(full, "")
        verb, _ = _pattern(binding)
        operation: dict[str, Any] = {
            "operationId": f"{service.name}_{method.name}" + (f"_{verb.capitalize()}" if index else ""),
            "tags": [service.name],
            "summary": _first_sentence(comment) or method.name,
        }
        if comment:
            operation["description"] = comment + f"\n\ngRPC: `{service_name[1:]}/{method.name}`."
        request = self.d.messages[method.input_type]
        fields = {f.name: f for f in request.field}
        parameters = []
        in_path = set()
        for name, field_path in variables:
            parent, field = self._walk(method.input_type, field_path)
            schema = self._single(field, field.options.Extensions[validate_pb2.field])
            if schema.get("pattern", "").startswith("^$|"):  # a path segment is never empty
                schema["pattern"] = schema["pattern"][3:]
            schema.pop("minLength", None)
            parameter = {"name": name, "in": "path", "required": True, "schema": schema}
            if description := self.d.comments.get(f"{parent}.{field.name}"):
                parameter["description"] = description
            parameters.append(parameter)
            in_path.add(field_path.split(".")[0])
        body = binding.body
        media = method.options.Extensions[rest_media_pb2.http_body_media_type]
        if body == "*":
            rest = [f for f in request.field if f.name not in in_path]
            if rest:
                schema = self._body_schema(method.input_type, in_path)
                operation["requestBody"] = {
                    # Required when a field of it is (the schema may be a $ref: ask the fields).
                    "required": any(field_behavior_pb2.REQUIRED in _behaviors(f) for f in rest),
                    "content": {"application/json": {"schema": schema}},
                }
        else:
            query_fields = [f for f in request.field if f.name not in in_path and f.name != body]
            parameters.extend(self._query_parameters(query_fields, method.input_type))
            if body:
                field = fields[body]
                if field.type_name == HTTP_BODY:
                    operation["requestBody"] = {
                        "required": True,
                        "description": "The raw bytes (not JSON), streamed to the server.",
                        "content": {media or "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}}},
                    }
                else:
                    operation["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": self.field_schema(field, "")}},
                    }
        if parameters:
            operation["parameters"] = parameters
        operation["responses"] = self._responses(method, media, comment, bool(variables), bool(body))
        policy = method.options.Extensions[auth_policy_pb2.auth_policy]
        operation["security"] = _security(policy, full)
        operation["x-the0-auth-policy"] = auth_policy_pb2.AuthPolicy.Name(policy)
        if policy == auth_policy_pb2.AUTH_POLICY_UNSPECIFIED:  # API keys accepted: say which scope
            access = scopes.Access.from_proto(method.options.Extensions[access_pb2.access])
            operation["x-the0-scope"] = access.scope
            operation["description"] = (operation.get("description", "") + "\n\n" + _scope_sentence(access)).lstrip()
        return operation

    def _walk(self, message_name: str, field_path: str) -> tuple[str, FieldProto]:
        """(full name of the message holding the last field, that field) of ``a.b.c``."""
        parent, field = message_name, None
        for part in field_path.split("."):
            parent = field.type_name if field else message_name
            field = next(f for f in self.d.messages[parent].field if f.name == part)
        assert field is not None
        return parent, field

    def _body_schema(self, message_name: str, in_path: set[str]) -> Schema:
        if not in_path:
            return self.ref(message_name)
        return self._message_schema(message_name, omit=in_path)

    def _query_parameters(self, fields: list[FieldProto], message_name: str,
                          prefix: str = "") -> Iterator[dict[str, Any]]:
        """The transcoder's query parameters: scalars, enums, repeated scalars, well-known
        scalar-like messages, and the fields of other messages as ``a.b``."""
        for field in fields:
            name = prefix + field.json_name
            is_message = field.type == FieldProto.TYPE_MESSAGE
            if is_message and field.type_name not in _WELL_KNOWN:
                nested = self.d.messages[field.type_name]
                if nested.options.map_entry:
                    continue  # maps cannot be query parameters
                yield from self._query_parameters(list(nested.field), field.type_name, f"{name}.")
                continue
            schema = self.field_schema(field, f"{message_name}.{field.name}")
            description = schema.pop("description", "")
            schema.pop("readOnly", None)
            if field.type == FieldProto.TYPE_ENUM and field.label != FieldProto.LABEL_REPEATED:
                # The transcoder reads an enum parameter by name or by number (proto3 JSON), so
                # `state=0` is accepted: the document says both (schemathesis sent the number).
                allowed = schema.get("enum")  # names, when buf.validate restricts the values
                numbers = [v.number for v in self.d.enums[field.type_name].value
                           if allowed is None or v.name in allowed]
                schema = {"anyOf": [schema, {"type": "integer", "enum": numbers}]}
            parameter: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
            if field_behavior_pb2.REQUIRED in _behaviors(field):
                parameter["required"] = True
            if description:
                parameter["description"] = description
            if field.label == FieldProto.LABEL_REPEATED:
                parameter["explode"] = True
            yield parameter

    def _responses(self, method: descriptor_pb2.MethodDescriptorProto, media: str, comment: str,
                   has_path: bool, has_body: bool) -> dict[str, Any]:
        output = method.output_type
        if output == HTTP_BODY:
            media = media or "application/octet-stream"
            if media.startswith("text/"):
                schema: Schema = {"type": "string"}
            elif media == "application/json":
                schema = {}
            else:
                schema = {"type": "string", "format": "binary"}
            ok = {"description": "The bytes, streamed.", "content": {media: {"schema": schema}}}
        elif method.server_streaming:
            ok = {"description": "A stream: one JSON message per line, flushed as it happens.",
                  "content": {NDJSON: {"schema": self.ref(output)}}}
        else:
            ok = {"description": "OK", "content": {"application/json": {"schema": self.ref(output)}}}
        statuses = {400, 429, 503}
        policy = method.options.Extensions[auth_policy_pb2.auth_policy]
        if policy != auth_policy_pb2.AUTH_POLICY_PUBLIC:
            statuses.add(401)
        if policy != auth_policy_pb2.AUTH_POLICY_PUBLIC:
            # An API key is refused (API_KEY_NOT_ALLOWED, or API_KEY_SCOPE where keys are
            # accepted but its scopes do not cover the call), and so is a non-admin.
            statuses.add(403)
        if has_path:
            statuses.add(404)
        if has_body:
            statuses.add(413)
        for code in _comment_codes(comment):
            statuses.add(_HTTP_STATUS_OF_CODE[code])
        responses: dict[str, Any] = {"200": ok}
        for status in sorted(statuses):
            responses[str(status)] = {"$ref": f"#/components/responses/{_RESPONSES[status][0]}"}
        return responses

    # -- errors -----------------------------------------------------------------------------

    def error_components(self) -> dict[str, Any]:
        details = []
        for name in _ERROR_DETAILS:
            if name not in self.d.messages:
                continue
            component = self._names[name]
            self.ref(name)
            detail = {"type": "object", "allOf": [{"$ref": f"#/components/schemas/{component}"}],
                      "properties": {"@type": {"const": f"type.googleapis.com/{name[1:]}"}},
                      "required": ["@type"]}
            self.schemas[f"{component}Detail"] = detail
            details.append({"$ref": f"#/components/schemas/{component}Detail"})
        self.schemas["Status"] = {
            "type": "object",
            "description": "google.rpc.Status: every error, from the server or from Envoy.",
            "properties": {
                "code": {"type": "integer", "format": "int32", "description": "The gRPC code number."},
                "message": {"type": "string", "description": "For people; never branch on it."},
                "details": {"type": "array", "items": {"anyOf": [
                    *details, {"$ref": "#/components/schemas/AnyDetail"}]}},
            },
            "required": ["code", "message"],
        }
        self.schemas["AnyDetail"] = dict(_WELL_KNOWN[".google.protobuf.Any"])
        reasons = [name for name in self.d.enums if name.endswith(".ErrorReason")]
        for full in reasons:
            enum = self.d.enums[full]
            prefix = "ERROR_REASON_"
            self.schemas["ErrorReasonName"] = {
                "type": "string",
                "description": "The values of ErrorInfo.reason: ErrorReason names without their prefix.",
                "enum": [v.name.removeprefix(prefix) for v in enum.value if v.number != 0],
            }
        responses: dict[str, Any] = {}
        for status, (name, description) in sorted(_RESPONSES.items()):
            responses[name] = {
                "description": f"{status}: {description}",
                "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
            }
        responses["TooManyRequests"]["headers"]["retry-after"] = {
            "description": "Seconds to wait before retrying (rate limits).", "schema": {"type": "string"}}
        return responses


def _nullable(schema: Schema) -> Schema:
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    keep: Schema = {k: schema[k] for k in ("description", "readOnly", "writeOnly") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in keep}
    return {"anyOf": [inner, {"type": "null"}], **keep}


def _non_empty(schema: Schema, field: FieldProto, d: _Descriptors) -> Schema:
    """A REQUIRED field's schema: its zero value (empty string or list, the enum's 0) is refused."""
    if field.label == FieldProto.LABEL_REPEATED and not _is_map(d, field):
        return {**schema, "minItems": max(1, schema.get("minItems", 0))}
    if field.type == FieldProto.TYPE_STRING:
        out = {**schema, "minLength": max(1, schema.get("minLength", 0))}
        if out.get("pattern", "").startswith("^$|"):
            out["pattern"] = out["pattern"][3:]
        elif out.get("pattern", "").startswith("^(|[\\s\\S]{"):
            out["minLength"] = max(out["minLength"], int(re.findall(r"\{(\d+),", out.pop("pattern"))[0]))
        return out
    if field.type == FieldProto.TYPE_ENUM:
        enum = d.enums[field.type_name]
        return {"allOf": [schema], "enum": [v.name for v in enum.value if v.number != 0]}
    return schema


def _string_rules(rules: validate_pb2.StringRules, ignore_empty: bool) -> Schema:
    out: Schema = {}
    if rules.HasField("max_len"):
        out["maxLength"] = rules.max_len
    if rules.HasField("min_len") and not ignore_empty:
        out["minLength"] = rules.min_len
    if rules.HasField("len"):
        out["minLength"] = out["maxLength"] = rules.len
    pattern = ""
    if rules.HasField("pattern"):
        pattern = rules.pattern
    if rules.HasField("uuid") and rules.uuid:
        out["format"] = "uuid"
        pattern = f"^{_UUID_PATTERN}$"
    if rules.HasField("email") and rules.email:
        out["format"] = "email"
    if allowed := list(getattr(rules, "in")):  # `in` is a Python keyword
        out["enum"] = allowed
    if pattern:
        out["pattern"] = f"^$|{pattern}" if ignore_empty else pattern
    if ignore_empty and rules.HasField("min_len"):
        out["pattern"] = out.get("pattern") or f"^(|[\\s\\S]{{{rules.min_len},}})$"
    if ignore_empty and "format" in out:
        del out["format"]  # the empty string is allowed: the pattern says what else is
    return out


def _range(rules: Any) -> Schema:
    out: Schema = {}
    for name, key in (("gte", "minimum"), ("lte", "maximum"), ("gt", "exclusiveMinimum"),
                      ("lt", "exclusiveMaximum")):
        if rules.HasField(name):
            out[key] = getattr(rules, name)
    return out


def _pattern(binding: http_pb2.HttpRule) -> tuple[str, str]:
    kind = binding.WhichOneof("pattern")
    if kind == "custom":
        return binding.custom.kind.lower(), binding.custom.path
    if kind is None:
        raise ValueError("an http rule without a pattern")
    return kind, getattr(binding, kind)


def _path(template: str) -> tuple[str, list[tuple[str, str]]]:
    """``/api/bots/{bot.id}`` -> (``/api/bots/{id}``, [("id", "bot.id")]): parameters named by the
    last field of their path, in lowerCamelCase."""
    variables = []

    def rename(match: re.Match[str]) -> str:
        field_path = match.group(1).split("=")[0]
        if "=" in match.group(1) and match.group(1).split("=")[1] not in ("*",):
            raise ValueError(f"{template}: multi-segment variables are not supported")
        last = field_path.split(".")[-1]
        name = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), last)
        variables.append((name, field_path))
        return "{" + name + "}"

    return re.sub(r"\{([^}]*)\}", rename, template), variables


def _scope_sentence(access: scopes.Access) -> str:
    allowed = [scopes.FULL, *([scopes.READ, access.scope] if access.level == "read" else []),
               f"{access.resource}:write"]
    names = ", ".join(f"`{s}`" for s in allowed[:-1]) + f" or `{allowed[-1]}`"
    return f"API keys need scope `{access.scope}`: a key with {names} may call it; others get 403 (API_KEY_SCOPE)."


def _first_sentence(comment: str) -> str:
    text = " ".join(comment.split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    return (match.group(1) if match else text)[:120]


def _comment_codes(comment: str) -> list[str]:
    """gRPC code names in the RPC's ``Errors:`` comment (up to the end of the comment)."""
    _, found, errors = comment.partition("Errors:")
    if not found:
        return []
    return sorted({c for c in re.findall(r"\b[A-Z_]{5,}\b", errors) if c in _HTTP_STATUS_OF_CODE})


def _security(policy: auth_policy_pb2.AuthPolicy.ValueType, method: str) -> list[dict[str, list[str]]]:
    if policy == auth_policy_pb2.AUTH_POLICY_PUBLIC:
        return []
    if policy in (auth_policy_pb2.AUTH_POLICY_USER_SESSION, auth_policy_pb2.AUTH_POLICY_ADMIN):
        return [{"Bearer": []}]  # an admin's session: admin RPCs refuse every API key
    if policy == auth_policy_pb2.AUTH_POLICY_UNSPECIFIED:
        return [{"Bearer": []}, {"ApiKey": []}, {"ApiKeyHeader": []}]
    raise ValueError(f"{method}: {auth_policy_pb2.AuthPolicy.Name(policy)} has no place on the REST edge")


def build_document(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    builder = _Builder(_Descriptors(fds))
    paths = builder.operations()
    responses = builder.error_components()
    tags = [{"name": service.name, "description": builder.d.comments.get(name, "")}
            for name, service in builder.d.public_services()]
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": __version__, "description": DESCRIPTION},
        "servers": [{"url": "/", "description": "The Envoy edge that serves this document"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "responses": responses,
            "headers": {"RequestId": {"description": "The request id (the client's x-request-id, or Envoy's).",
                                      "schema": {"type": "string"}}},
            "securitySchemes": {
                "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "A user's access token from register, login or refresh."},
                "ApiKey": {"type": "http", "scheme": "ApiKey",
                           "description": "An API key as `authorization: ApiKey <key>`."},
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                 "description": "An API key as `x-api-key: <key>`."},
            },
        },
    }


def render(fds: descriptor_pb2.FileDescriptorSet) -> tuple[str, str]:
    """(JSON, YAML) texts of the document: same descriptors, same bytes."""
    document = build_document(fds)
    as_json = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    as_yaml = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return as_json, as_yaml


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m the0.server.openapi DESCRIPTOR_SET OUT_DIR")
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(args[0]).read_bytes())
    as_json, as_yaml = render(fds)
    out = Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(as_json, encoding="utf-8")
    (out / YAML_FILE).write_text(as_yaml, encoding="utf-8")


if __name__ == "__main__":
    main()
