"""The input gate without a server: the contract declares a limit for every string a client
can send, and the rules for every value (NUL, Struct depth/size/numbers, times, masks) hold."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from buf.validate import validate_pb2
from tests.request_fields import every_request_type, string_fields
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.server.errors import InvalidArgument
from the0.server.input_gate import MAX_STRUCT_DEPTH, MAX_STRUCT_VALUES, check_request


def violations_of(message) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        check_request(message)
    assert caught.value.reason == "VALIDATION_FAILED"
    return {v.field: v.description for v in caught.value.violations}


def test_every_string_a_client_can_send_has_a_declared_limit():
    undeclared = []
    for request in every_request_type():
        for path, field in string_fields(request):
            rules = field.GetOptions().Extensions[validate_pb2.field]
            text = rules.repeated.items.string if field.is_repeated else rules.string
            if not (text.HasField("max_len") or text.uuid):
                undeclared.append(f"{request.full_name}: {path}")
    assert undeclared == []


def test_the_request_types_cover_every_service():
    names = {d.full_name for d in every_request_type()}
    assert "the0.bot.v1.GetBotRequest" in names and "the0.auth.v1.LoginRequest" in names
    assert "the0.custom_bot.v1.UploadCustomBotRequest" in names


def test_a_clean_request_passes():
    config = struct_pb2.Struct()
    config.update({"type": "scheduled/sma", "symbol": "BTC", "nested": {"list": [1, "two", None, True]}})
    check_request(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="my bot", config=config)))


def test_nul_anywhere_is_a_field_violation():
    config = struct_pb2.Struct()
    config.update({"symbol": "BTC\x00", "k\x00": 1, "list": ["ok", "bad\x00"]})
    found = violations_of(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="a\x00b", config=config)))
    assert "NUL" in found["bot.name"]
    assert "NUL" in found["bot.config.symbol"]
    assert "NUL" in found["bot.config.list[1]"]
    assert "NUL" in found["bot.config"]  # the key


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_struct_numbers_must_be_finite(number):
    config = struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=number)})
    found = violations_of(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="b", config=config)))
    assert "finite" in found["bot.config.a"]


def test_struct_depth_and_size_are_bounded():
    deep: dict = {}
    cursor = deep
    for _ in range(MAX_STRUCT_DEPTH + 1):
        cursor["x"] = {}
        cursor = cursor["x"]
    config = struct_pb2.Struct()
    config.update(deep)
    found = violations_of(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="b", config=config)))
    assert any("nested" in text for text in found.values())

    wide = struct_pb2.Struct()
    wide.update({"list": list(range(MAX_STRUCT_VALUES + 5))})
    found = violations_of(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="b", config=wide)))
    assert any("values" in text for text in found.values())


def test_declared_limits_name_the_field_in_json():
    found = violations_of(bot_service_pb2.GetBotRequest(id="x" * 5000))
    assert found == {"id": "must be a valid UUID"}
    found = violations_of(bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot(name="n" * 101), request_id="r" * 101))
    assert set(found) == {"bot.name", "requestId"}
    # Nothing the client sent is echoed back.
    assert all("xxxx" not in text for text in found.values())


def test_timestamps_out_of_range_are_rejected():
    too_late = timestamp_pb2.Timestamp(seconds=253_402_300_800)
    request = api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="cli", expire_time=too_late))
    assert "between" in violations_of(request)["apiKey.expireTime"]


def test_field_masks_are_bounded():
    mask = field_mask_pb2.FieldMask(paths=["name"] * 60)
    request = bot_service_pb2.UpdateBotRequest(bot=bot_pb2.Bot(name="b"), update_mask=mask)
    assert "at most" in violations_of(request)["updateMask"]
    mask = field_mask_pb2.FieldMask(paths=["n" * 20_000])
    request = bot_service_pb2.UpdateBotRequest(bot=bot_pb2.Bot(name="b"), update_mask=mask)
    assert "at most" in violations_of(request)["updateMask"]


def test_string_fields_walks_nested_messages():
    paths = {path for path, _ in string_fields(bot_service_pb2.CreateBotRequest.DESCRIPTOR)}
    assert {"bot.name", "requestId"} <= paths
    assert all(isinstance(d, Descriptor) for d in every_request_type())
    assert all(isinstance(f, FieldDescriptor) for _, f in string_fields(bot_service_pb2.GetBotRequest.DESCRIPTOR))
