from datetime import UTC, datetime

import pytest
from google.protobuf import struct_pb2

from the0.api_key.v1 import api_key_pb2, api_key_service_pb2
from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.server.errors import InvalidArgument
from the0.server.pagination import Cursor, PageTokens, page_size
from the0.server.validation import validate_request


def test_every_missing_required_field_is_listed_by_json_path():
    request = bot_service_pb2.CreateBotRequest(bot=bot_pb2.Bot())
    with pytest.raises(InvalidArgument) as raised:
        validate_request(request)
    assert [v.field for v in raised.value.violations] == ["bot.name", "bot.config"]
    assert raised.value.reason == "VALIDATION_FAILED"


def test_missing_top_level_message_is_one_violation():
    with pytest.raises(InvalidArgument) as raised:
        validate_request(bot_service_pb2.CreateBotRequest())
    assert [v.field for v in raised.value.violations] == ["bot"]


def test_output_only_input_is_ignored():
    config = struct_pb2.Struct()
    config.update({"type": "scheduled/x"})
    request = bot_service_pb2.CreateBotRequest(
        bot=bot_pb2.Bot(id="forged", name="n", config=config, state=bot_pb2.BOT_STATE_RUNNING, error="x")
    )
    validate_request(request)
    assert request.bot.id == "" and request.bot.state == bot_pb2.BOT_STATE_UNSPECIFIED and request.bot.error == ""
    assert request.bot.name == "n"


def test_valid_request_passes_and_nested_can_be_skipped():
    validate_request(api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="cli")))
    validate_request(bot_service_pb2.UpdateBotRequest(bot=bot_pb2.Bot(name="only-name")), nested=False)


@pytest.mark.parametrize(("requested", "expected"), [(0, 50), (1, 1), (200, 200), (1000, 200)])
def test_page_size(requested, expected):
    assert page_size(requested) == expected


def test_negative_page_size_is_invalid():
    with pytest.raises(InvalidArgument) as raised:
        page_size(-1)
    assert raised.value.violations[0].field == "pageSize"


def test_page_tokens_round_trip_and_reject_forgery_and_other_scopes():
    tokens = PageTokens(b"k" * 32)
    cursor = Cursor(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "id-1")
    token = tokens.encode(cursor, scope="bots:all")
    assert tokens.decode(token, scope="bots:all") == cursor
    assert tokens.decode("", scope="bots:all") is None
    for bad in (token[:-2] + "AA", "garbage", token.replace(".", ""), "." + token.split(".")[1]):
        with pytest.raises(InvalidArgument) as raised:
            tokens.decode(bad, scope="bots:all")
        assert raised.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        tokens.decode(token, scope="bots:RUNNING")
    with pytest.raises(InvalidArgument):
        PageTokens(b"other" * 8).decode(token, scope="bots:all")


def test_page_trims_the_extra_row_and_signs_the_next_token():
    tokens = PageTokens(b"k" * 32)
    rows = [Cursor(datetime(2026, 1, 1, tzinfo=UTC), f"id-{i}") for i in range(3)]
    page, token = tokens.page(rows, 2, scope="s", cursor=lambda row: row)
    assert page == rows[:2]
    assert tokens.decode(token, scope="s") == rows[1]
    assert tokens.page(rows[:2], 2, scope="s", cursor=lambda row: row) == (rows[:2], "")
