"""The one input gate: every request message is checked here once, before any handler.

Two kinds of rule, both read from the descriptors so that a new RPC cannot escape them:

- **Declared rules** — ``(buf.validate.field)`` annotations in the proto (maximum lengths,
  UUID-shaped ids, list sizes), evaluated natively by protovalidate.
- **Rules for every value** — no string anywhere may hold a NUL (PostgreSQL text cannot),
  ``Struct`` values are bounded in depth and count and carry only finite numbers,
  ``Timestamp`` values are within years 1..9999, ``FieldMask`` paths are few and short.

Every problem becomes one field violation named by its JSON path (``bot.config.a.b``), and
the client gets INVALID_ARGUMENT with reason VALIDATION_FAILED. Messages never echo more
than a short, printable excerpt of what the client sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from functools import cache

import protovalidate
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from the0.server.errors import FieldViolation, InvalidArgument

# Deep enough for any real bot config (they nest 2-4 levels), far below the protobuf
# decoder's own recursion limit (a Struct level costs it about three message levels).
MAX_STRUCT_DEPTH = 16
MAX_STRUCT_VALUES = 10_000
MAX_STRUCT_KEY_CHARS = 256
MAX_FIELD_MASK_PATHS = 50
MAX_FIELD_MASK_PATH_CHARS = 200
# Strings of well-known google.* messages, which carry no rules of ours (HttpBody.content_type).
MAX_UNDECLARED_STRING_CHARS = 1024
# Timestamp range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
MAX_VIOLATIONS = 20



def check_request(message: Message) -> None:
    """Raise InvalidArgument naming every bad field of ``message``; return if it is clean."""
    violations = list(_every_value_rules(message, ""))
    if not violations:
        violations = [_from_protovalidate(v) for v in protovalidate.collect_violations(message)]
    if violations:
        violations = violations[:MAX_VIOLATIONS]
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}", violations=violations)


# -- rules for every value ------------------------------------------------------------


def _every_value_rules(message: Message, prefix: str) -> Iterator[FieldViolation]:
    here = prefix.rstrip(".")
    if isinstance(message, struct_pb2.Struct):
        yield from _struct_rules(message, here, 1, _Budget())
        return
    if isinstance(message, struct_pb2.Value):
        yield from _value_rules(message, here, 1, _Budget())
        return
    if isinstance(message, timestamp_pb2.Timestamp):
        yield from _timestamp_rules(message, here)
        return
    if isinstance(message, field_mask_pb2.FieldMask):
        yield from _field_mask_rules(message, here)
        return
    declared = not message.DESCRIPTOR.full_name.startswith("google.")
    # ListFields() yields only the fields that are set: a clean small request costs little.
    for field, value in message.ListFields():
        path = f"{prefix}{field.json_name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if _is_repeated(field) else (value,)
            for index, text in enumerate(values):
                where = f"{path}[{index}]" if _is_repeated(field) else path
                yield from _string_rules(text, where, declared=declared)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(field):
                yield from _map_rules(value, path)
            elif _is_repeated(field):
                for index, item in enumerate(value):
                    yield from _every_value_rules(item, f"{path}[{index}].")
            else:
                yield from _every_value_rules(value, f"{path}.")


def _string_rules(text: str, path: str, *, declared: bool) -> Iterator[FieldViolation]:
    if "\x00" in text:
        yield FieldViolation(path, "must not contain NUL (U+0000) characters")
    if not declared and len(text) > MAX_UNDECLARED_STRING_CHARS:
        yield FieldViolation(path, f"must be at most {MAX_UNDECLARED_STRING_CHARS} characters")


def _map_rules(entries: Mapping[object, object], path: str) -> Iterator[FieldViolation]:
    for key, value in entries.items():
        where = f"{path}[{_excerpt(str(key))!r}]"
        if isinstance(key, str):
            yield from _string_rules(key, f"{path} (a key)", declared=True)
        if isinstance(value, str):
            yield from _string_rules(value, where, declared=True)
        elif isinstance(value, Message):
            yield from _every_value_rules(value, f"{where}.")


class _Budget:
    """How many Struct values one request may still hold."""

    def __init__(self) -> None:
        self.left = MAX_STRUCT_VALUES


def _struct_rules(struct: struct_pb2.Struct, path: str, depth: int, budget: _Budget) -> Iterator[FieldViolation]:
    if depth > MAX_STRUCT_DEPTH:
        yield FieldViolation(path, f"is nested more than {MAX_STRUCT_DEPTH} levels deep")
        return
    for key, value in struct.fields.items():
        where = f"{path}.{_excerpt(key)}" if path else _excerpt(key)
        if "\x00" in key:
            yield FieldViolation(path or "(root)", "keys must not contain NUL (U+0000) characters")
        elif len(key) > MAX_STRUCT_KEY_CHARS:
            yield FieldViolation(path or "(root)", f"keys must be at most {MAX_STRUCT_KEY_CHARS} characters")
        yield from _value_rules(value, where, depth, budget)


def _value_rules(value: struct_pb2.Value, path: str, depth: int, budget: _Budget) -> Iterator[FieldViolation]:
    budget.left -= 1
    if budget.left < 0:
        if budget.left == -1:  # say it once, at the first value over the limit
            yield FieldViolation(path, f"holds more than {MAX_STRUCT_VALUES} values in all")
        return
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            yield FieldViolation(path, "must be a finite number (not NaN or Infinity)")
    elif kind == "string_value":
        if "\x00" in value.string_value:
            yield FieldViolation(path, "must not contain NUL (U+0000) characters")
    elif kind == "struct_value":
        yield from _struct_rules(value.struct_value, path, depth + 1, budget)
    elif kind == "list_value":
        if depth + 1 > MAX_STRUCT_DEPTH:
            yield FieldViolation(path, f"is nested more than {MAX_STRUCT_DEPTH} levels deep")
            return
        for index, item in enumerate(value.list_value.values):
            yield from _value_rules(item, f"{path}[{index}]", depth + 1, budget)


def _timestamp_rules(stamp: timestamp_pb2.Timestamp, path: str) -> Iterator[FieldViolation]:
    seconds, nanos = stamp.seconds, stamp.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos <= 999_999_999):
        yield FieldViolation(path, "must be a time between 0001-01-01 and 9999-12-31 (UTC)")


def _field_mask_rules(mask: field_mask_pb2.FieldMask, path: str) -> Iterator[FieldViolation]:
    paths = mask.paths
    if len(paths) > MAX_FIELD_MASK_PATHS:
        yield FieldViolation(path, f"must name at most {MAX_FIELD_MASK_PATHS} fields")
    elif any(len(p) > MAX_FIELD_MASK_PATH_CHARS or "\x00" in p for p in paths):
        yield FieldViolation(path, f"paths must be at most {MAX_FIELD_MASK_PATH_CHARS} characters, without NUL")


# -- declared rules -------------------------------------------------------------------


def _from_protovalidate(violation: protovalidate.Violation) -> FieldViolation:
    parts: list[str] = []
    elements = violation.proto.field.elements if violation.proto.field is not None else []
    for element in elements:
        parts.append(_json_name(element.field_name))
        subscript = element.subscript
        if subscript is not None and subscript.field == "index":
            parts[-1] += f"[{subscript.value}]"
    return FieldViolation(".".join(parts) or "(request)", violation.proto.message or violation.proto.rule_id)


@cache
def _json_name(proto_name: str) -> str:
    """protoc's default JSON name (we never set json_name): lower camel case."""
    head, *rest = proto_name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


# -- helpers --------------------------------------------------------------------------


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@cache
def _is_map_type(descriptor: Descriptor) -> bool:
    return bool(descriptor.GetOptions().map_entry)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and _is_map_type(field.message_type)


def _excerpt(text: str, limit: int = 40) -> str:
    """A client's text as it may appear in a field path: short and printable."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")
