"""``google.api.field_behavior`` enforced from the descriptors.

REQUIRED fields that are empty become one field violation each (JSON names,
dotted paths); OUTPUT_ONLY fields sent by a client are cleared, i.e. ignored.
The rules are read once per message type and cached.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, TypeAlias

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from the0.server.errors import FieldViolation, InvalidArgument

if TYPE_CHECKING:
    from google._upb import _message as upb

    # Message.DESCRIPTOR is the pure-Python or the upb (C) descriptor, depending on
    # the protobuf backend; both have the attributes read here.
    AnyDescriptor: TypeAlias = Descriptor | upb.Descriptor
    AnyField: TypeAlias = FieldDescriptor | upb.FieldDescriptor

_REQUIRED = field_behavior_pb2.REQUIRED
_OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY


@cache
def _rules(descriptor: AnyDescriptor) -> tuple[tuple[AnyField, ...], tuple[AnyField, ...]]:
    required: list[AnyField] = []
    output_only: list[AnyField] = []
    for field in descriptor.fields:
        behaviours = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if _REQUIRED in behaviours:
            required.append(field)
        if _OUTPUT_ONLY in behaviours:
            output_only.append(field)
    return tuple(required), tuple(output_only)


def _is_message(field: AnyField) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and not _is_repeated(field)


def _is_repeated(field: AnyField) -> bool:
    return field.is_repeated


def _is_own_message(field: AnyField) -> bool:
    """A singular message field of ours: one whose own field behaviours apply (not a well-known type)."""
    return (
        _is_message(field)
        and field.message_type is not None
        and not field.message_type.full_name.startswith("google.protobuf.")
    )


def _is_empty(message: Message, field: AnyField) -> bool:
    if _is_repeated(field):
        return len(getattr(message, field.name)) == 0
    if _is_message(field):
        return not message.HasField(field.name)
    # Scalars and enums: the zero value (empty string, 0, *_UNSPECIFIED) is "not set".
    return not getattr(message, field.name)


def missing_required(message: Message, *, nested: bool = True, prefix: str = "") -> list[FieldViolation]:
    """Violations for empty REQUIRED fields; with ``nested``, inside REQUIRED messages too."""
    required, _ = _rules(message.DESCRIPTOR)
    violations = []
    for field in required:
        path = f"{prefix}{field.json_name}"
        if _is_empty(message, field):
            violations.append(FieldViolation(path, "is required"))
        elif nested and _is_own_message(field):
            violations.extend(missing_required(getattr(message, field.name), prefix=f"{path}."))
    return violations


def clear_output_only(message: Message) -> None:
    """Drop what clients may not set (ids, states, times), recursively."""
    _, output_only = _rules(message.DESCRIPTOR)
    for field in output_only:
        message.ClearField(field.name)
    for child in message.DESCRIPTOR.fields:
        if _is_own_message(child) and message.HasField(child.name):
            clear_output_only(getattr(message, child.name))


def validate_request(message: Message, *, nested: bool = True) -> None:
    """Ignore OUTPUT_ONLY input, then raise one InvalidArgument listing every missing field."""
    clear_output_only(message)
    violations = missing_required(message, nested=nested)
    if violations:
        names = ", ".join(v.field for v in violations)
        raise InvalidArgument(f"missing required field{'s' if len(violations) > 1 else ''}: {names}",
                              violations=violations)


MAX_DISPLAY_NAME = 100
MAX_REQUEST_ID = 100


def check_display_name(name: str, *, field: str) -> str:
    """A resource's display name: trimmed, 1 to MAX_DISPLAY_NAME characters."""
    name = name.strip()
    if not name or len(name) > MAX_DISPLAY_NAME:
        message = f"must be 1 to {MAX_DISPLAY_NAME} characters"
        raise InvalidArgument(f"name {message}", violations=[FieldViolation(field, message)])
    return name


def check_request_id(request_id: str) -> str | None:
    """An optional client-chosen idempotency key (AIP-155); empty means none."""
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument(
            f"requestId must be at most {MAX_REQUEST_ID} characters",
            violations=[FieldViolation("requestId", f"at most {MAX_REQUEST_ID} characters")],
        )
    return request_id or None
