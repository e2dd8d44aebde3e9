"""Handlers for contract RPCs whose logic is not built yet.

They answer UNIMPLEMENTED with an ErrorInfo (reason NOT_IMPLEMENTED), never a
fake success. Built from the service descriptor, so every RPC of the contract
is served with its real request and response types (and reflection, Envoy's
transcoder and clients all see the full API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from the0.server.errors import Unimplemented


def unimplemented_service(service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    handlers = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        error = Unimplemented(
            f"{service.name}.{method.name} is not implemented yet",
            metadata={"method": f"/{service.full_name}/{method.name}"},
        )
        codec = {"request_deserializer": request.FromString, "response_serializer": response.SerializeToString}
        if method.server_streaming:
            make = (
                grpc.stream_stream_rpc_method_handler
                if method.client_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            handlers[method.name] = make(_raising_stream(error), **codec)
        else:
            make = (
                grpc.stream_unary_rpc_method_handler
                if method.client_streaming
                else grpc.unary_unary_rpc_method_handler
            )
            handlers[method.name] = make(_raising_unary(error), **codec)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _raising_unary(error: Unimplemented) -> Any:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise error

    return behaviour


def _raising_stream(error: Unimplemented) -> Any:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        raise error
        yield  # unreachable: makes this an async generator, as streaming handlers are

    return behaviour
