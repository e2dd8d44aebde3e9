"""Every RPC and every string field a client can send, read from the generated descriptors,
so that tests built on them cover a new RPC or field without being edited."""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from the0.api_key.v1 import api_key_service_pb2
from the0.auth.v1 import auth_service_pb2
from the0.backtest.v1 import backtest_service_pb2
from the0.bot.v1 import bot_service_pb2
from the0.custom_bot.v1 import custom_bot_service_pb2
from the0.health.v1 import health_service_pb2
from the0.platform.v1 import platform_service_pb2

SERVICE_MODULES = (
    auth_service_pb2,
    api_key_service_pb2,
    bot_service_pb2,
    custom_bot_service_pb2,
    backtest_service_pb2,
    health_service_pb2,
    platform_service_pb2,
)


def every_method() -> Iterator[MethodDescriptor]:
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


def every_request_type() -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for method in every_method():
        seen.setdefault(method.input_type.full_name, method.input_type)
    return list(seen.values())


def string_fields(descriptor: Descriptor, prefix: str = "") -> Iterator[tuple[str, FieldDescriptor]]:
    """(JSON path, field) of every string field in our own messages, nested ones included."""
    for field in descriptor.fields:
        path = f"{prefix}{field.json_name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            yield path, field
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.message_type.full_name.startswith("google.")
            and not field.message_type.GetOptions().map_entry
        ):
            yield from string_fields(field.message_type, f"{path}.")
