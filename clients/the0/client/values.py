"""Messages as plain JSON values, the way the REST API prints them.

``google.protobuf.Struct`` keeps every number as a double, so ``MessageToDict`` turns a bot config's
``3`` into ``3.0``; REST (Envoy) prints an integral double as ``3``. ``to_dict`` does the same, for every
number in the message (int64 fields stay strings, as in proto3 JSON).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

# Beyond 2**53 a double no longer holds every integer: such values stay floats, as JSON parsers would.
_EXACT = 2**53


def plain_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {key: plain_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_numbers(item) for item in value]
    return value


def to_dict(message: Message) -> dict[str, Any]:
    """The message as proto3 JSON (lowerCamelCase), integral numbers as ints."""
    result: dict[str, Any] = plain_numbers(MessageToDict(message))
    return result


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct field (a bot's config, a backtest's summary) as a dict, integral numbers as ints."""
    result: dict[str, Any] = plain_numbers(MessageToDict(struct))
    return result


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def new_request_id() -> str:
    """Creating calls always carry a request id, so gRPC may retry them without a second effect."""
    return str(uuid.uuid4())
