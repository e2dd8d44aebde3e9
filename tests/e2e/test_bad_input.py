"""Hostile input, over raw gRPC and through Envoy: every case is the client's 4xx with an
ErrorInfo reason, nothing reaches the database, and no error-level line is logged.

The field cases are generated from the descriptors: every string field of every request of
every RPC gets a NUL and an over-long value, so a new RPC or field cannot escape the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from buf.validate import validate_pb2
from tests.fixtures.accounts import new_account
from tests.request_fields import every_method, string_fields
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.common.v1 import auth_policy_pb2
from the0.custom_bot.v1 import custom_bot_service_pb2

RUNTIME_KEY = "runtime-key-of-at-least-thirty-two-characters"
ANALYZER_KEY = "analyzer-key-of-at-least-thirty-two-characters"
SERVICE_KEYS = {
    auth_policy_pb2.AUTH_POLICY_SERVICE_RUNTIME: RUNTIME_KEY,
    auth_policy_pb2.AUTH_POLICY_SERVICE_ANALYZER: ANALYZER_KEY,
}


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(
        envoy=True,
        service_accounts=(("runtime", "runtime-1", RUNTIME_KEY), ("analyzer", "analyzer-1", ANALYZER_KEY)),
        admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD,
    )


ADMIN_EMAIL, ADMIN_PASSWORD = "root@example.com", "admin password 123"
# A user's token -> an admin's token of the same stack: admin-only RPCs (AUTH_POLICY_ADMIN) are
# called as an admin, so their input checks are reached (the BFLA suite, test_admin.py, covers the rest).
ADMIN_TOKEN_FOR: dict[str, str] = {}


def credentials_for(method: MethodDescriptor, token: str) -> tuple[tuple[str, str], ...]:
    """What the method's auth policy accepts: a service key for the platform API, else the user's token."""
    policy = method.GetOptions().Extensions[auth_policy_pb2.auth_policy]
    if policy in SERVICE_KEYS:
        return (("x-service-key", SERVICE_KEYS[policy]),)
    if policy == auth_policy_pb2.AUTH_POLICY_ADMIN and token:
        token = ADMIN_TOKEN_FOR[token]
    return (("authorization", f"Bearer {token}"),) if token else ()


@pytest.fixture
async def token(stack) -> str:
    _, access_token = await new_account(stack.channel)
    await stack.app.identity.admin_ready.wait()
    admin = await auth_service_pb2_grpc.AuthServiceStub(stack.channel).Login(
        auth_service_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
    ADMIN_TOKEN_FOR[access_token] = admin.access_token
    return access_token


@pytest.fixture
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=10) as client:
        yield client


class _ErrorLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_error_lines() -> Iterator[None]:
    """A client mistake is never an error on the server: fail on any error-level log line."""
    handler = _ErrorLines()
    logger = logging.getLogger("the0")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert [f"{r.name}: {r.getMessage()}" for r in handler.records] == []


# -- helpers ---------------------------------------------------------------------------------------


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call_raw(channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes | list[bytes], token: str):
    """Call ``method`` with raw request bytes; returns the AioRpcError it ends with (or None)."""
    metadata = credentials_for(method, token)
    identity = lambda raw: raw  # bytes in, bytes out
    try:
        if method.client_streaming:
            chunks = payload if isinstance(payload, list) else [payload]

            async def requests():
                for chunk in chunks:
                    yield chunk

            call = channel.stream_unary(_path(method), request_serializer=identity, response_deserializer=identity)
            await call(requests(), metadata=metadata, timeout=10)
        elif method.server_streaming:
            call = channel.unary_stream(_path(method), request_serializer=identity, response_deserializer=identity)
            stream = call(payload, metadata=metadata, timeout=10)
            await stream.read()
            stream.cancel()
        else:
            call = channel.unary_unary(_path(method), request_serializer=identity, response_deserializer=identity)
            await call(payload, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def details_of(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status: {error.code()} {error.details()}"
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


def _set_path(message: Message, path: list[FieldDescriptor], value: str) -> None:
    *parents, leaf = path
    for field in parents:
        message = getattr(message, field.name)
    if leaf.is_repeated:
        getattr(message, leaf.name).append(value)
    else:
        setattr(message, leaf.name, value)


def _field_chain(descriptor, json_path: str) -> list[FieldDescriptor]:
    chain = []
    for part in json_path.split("."):
        field = next(f for f in descriptor.fields if f.json_name == part)
        chain.append(field)
        descriptor = field.message_type
    return chain


def _too_long(field: FieldDescriptor) -> str:
    rules = field.GetOptions().Extensions[validate_pb2.field]
    text = rules.repeated.items.string if field.is_repeated else rules.string
    if text.uuid:
        return "f" * 5000  # not a UUID, and long enough to hurt if echoed
    return "x" * (text.max_len + 1)


def bad_string_cases() -> Iterator[tuple[MethodDescriptor, str, str, str]]:
    for method in every_method():
        for path, _field in string_fields(method.input_type):
            leaf = _field_chain(method.input_type, path)[-1]
            yield method, path, "nul", "a\x00b"
            yield method, path, "too long", _too_long(leaf)


# -- every string field of every RPC ------------------------------------------------------------


async def test_every_string_field_of_every_rpc_rejects_nul_and_over_long_values(stack, token):
    seen: dict[str, int] = {}
    wrong = []
    for method, path, case, value in bad_string_cases():
        request = method.input_type._concrete_class()
        _set_path(request, _field_chain(method.input_type, path), value)
        error = await call_raw(stack.channel, method, request.SerializeToString(), token)
        label = f"{method.name} {path} ({case})"
        if error is None:
            wrong.append(f"{label}: accepted")
            continue
        seen[error.code().name] = seen.get(error.code().name, 0) + 1
        reason, fields = details_of(error)
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or reason != "VALIDATION_FAILED":
            wrong.append(f"{label}: {error.code().name} {reason} {error.details()}")
        elif not any(f == path or f.startswith(f"{path}[") for f in fields):
            wrong.append(f"{label}: violations name {fields}")
        # Nothing is echoed: the trailers stay small whatever was sent.
        trailers = sum(len(k) + len(v) for k, v in (error.trailing_metadata() or ()))
        if trailers > 2048:
            wrong.append(f"{label}: {trailers} bytes of trailers")
    assert wrong == []
    assert sum(seen.values()) >= 100, seen  # the generator really covered the contract


# -- malformed protobuf ------------------------------------------------------------------------------

MALFORMED = {
    "truncated field": b"\x0a\x10abc",
    "invalid UTF-8": b"\x0a\x02\xff\xfe",
    "overflowing varint": b"\x10" + b"\xff" * 11,
}

LOGIN = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].methods_by_name["Login"]
GET_BOT = bot_service_pb2.DESCRIPTOR.services_by_name["BotService"].methods_by_name["GetBot"]
CREATE_BOT = bot_service_pb2.DESCRIPTOR.services_by_name["BotService"].methods_by_name["CreateBot"]
WATCH_BOT = bot_service_pb2.DESCRIPTOR.services_by_name["BotService"].methods_by_name["WatchBot"]
UPLOAD = custom_bot_service_pb2.DESCRIPTOR.services_by_name["CustomBotService"].methods_by_name["UploadCustomBot"]
CREATE_KEY = api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].methods_by_name["CreateApiKey"]


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("method", [LOGIN, GET_BOT, WATCH_BOT], ids=lambda m: m.name)
async def test_malformed_protobuf_is_invalid_argument_without_class_names(stack, token, method, case):
    error = await call_raw(stack.channel, method, MALFORMED[case], "" if method is LOGIN else token)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert details_of(error)[0] == "MALFORMED_REQUEST"
    assert "class" not in error.details() and "DecodeError" not in error.details()


async def test_a_corrupt_second_upload_chunk_is_invalid_argument(stack, token):
    good = custom_bot_service_pb2.UploadCustomBotRequest()
    good.chunk.data = b"PK\x03\x04" + b"\x00" * 100
    error = await call_raw(stack.channel, UPLOAD, [good.SerializeToString(), b"\x0a\x50trunc"], token)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert details_of(error)[0] == "MALFORMED_REQUEST"


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _nested_create_bot(levels: int) -> bytes:
    """CreateBotRequest{bot: {name, config: {"x": {"x": ... 1}}}} encoded by hand: the Python
    runtime itself refuses to build a message nested past its decoder's limit."""

    def struct_of(value: bytes) -> bytes:  # Struct{fields: {"x": value}}
        return _length_delimited(1, _length_delimited(1, b"x") + _length_delimited(2, value))

    value = struct_pb2.Value(number_value=1).SerializeToString()
    for _ in range(levels - 1):
        value = _length_delimited(5, struct_of(value))  # Value{struct_value: ...}
    config_field = bot_pb2.Bot.DESCRIPTOR.fields_by_name["config"].number
    bot = bot_pb2.Bot(name="deep").SerializeToString() + _length_delimited(config_field, struct_of(value))
    return _length_delimited(bot_service_pb2.CreateBotRequest.DESCRIPTOR.fields_by_name["bot"].number, bot)


@pytest.mark.parametrize("levels", [20, 32, 40, 60])
async def test_deeply_nested_configs_are_invalid_argument(stack, token, levels):
    error = await call_raw(stack.channel, CREATE_BOT, _nested_create_bot(levels), token)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert details_of(error)[0] in {"VALIDATION_FAILED", "MALFORMED_REQUEST"}


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_config_numbers_are_invalid_argument(stack, token, number):
    config = struct_pb2.Struct(fields={"threshold": struct_pb2.Value(number_value=number)})
    request = bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="nan", config=config))
    error = await call_raw(stack.channel, CREATE_BOT, request.SerializeToString(), token)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert details_of(error) == ("VALIDATION_FAILED", ["bot.config.threshold"])


async def test_an_out_of_range_expire_time_is_invalid_argument(stack, token):
    key = api_key_pb2.ApiKey(name="far", expire_time=timestamp_pb2.Timestamp(seconds=10**12))
    error = await call_raw(
        stack.channel, CREATE_KEY, api_key_service_pb2.CreateApiKeyRequest(api_key=key).SerializeToString(), token
    )
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert details_of(error) == ("VALIDATION_FAILED", ["apiKey.expireTime"])


# -- the same through Envoy ---------------------------------------------------------------------------


def reason_of(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    infos = [d for d in response.json()["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return infos[0]["reason"]


async def test_nul_over_rest_is_400_even_before_logging_in(http):
    response = await http.post(
        "/api/auth/login", content=b'{"email": "a\\u0000@example.com", "password": "x"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert reason_of(response) == "VALIDATION_FAILED"
    response = await http.post(
        "/api/auth/register",
        json={"email": "nul@example.com", "password": "correct horse battery", "username": "n\u0000l"},
    )
    assert response.status_code == 400 and reason_of(response) == "VALIDATION_FAILED"


@pytest.mark.parametrize("levels", [20, 33, 60, 98])
async def test_deep_json_over_rest_is_400(http, token, levels):
    body = '{"name": "deep", "config": ' + '{"x": ' * levels + "1" + "}" * levels + "}"
    response = await http.post(
        "/api/bots", content=body.encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400, response.text
    assert reason_of(response) in {"VALIDATION_FAILED", "MALFORMED_REQUEST"}


async def test_long_ids_over_rest_are_400_and_not_echoed(http, token):
    response = await http.get("/api/bots/" + "f" * 5000, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 400, response.text
    assert reason_of(response) == "VALIDATION_FAILED"
    assert len(response.content) < 2048 and "ffffffffff" not in response.text
