"""Config rules of bots and backtests (custom_bots/config_validation.py), with an in-memory catalog."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from the0.server.custom_bots.catalog import CustomBotVersion
from the0.server.custom_bots.config_validation import normalise, validate_config
from the0.server.errors import ApiError

SCHEMA = {
    "type": "object",
    "properties": {
        "symbol": {"type": "string", "minLength": 3},
        "quantity": {"type": "integer", "minimum": 1},
        "limits": {"type": "object", "properties": {"max": {"type": "number", "maximum": 10}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["symbol", "quantity"],
    "additionalProperties": False,
}


def version(**overrides: Any) -> CustomBotVersion:
    values: dict[str, Any] = {
        "id": "cb-1",
        "owner_id": "alice",
        "name": "my-bot",
        "version": "1.0.0",
        "state": "APPROVED",
        "type": "scheduled",
        "runtime": "python3.11",
        "entrypoints": {"bot": "main.py", "backtest": "backtest.py"},
        "bot_schema": SCHEMA,
        "backtest_schema": {
            "type": "object",
            "properties": {"days": {"type": "integer"}},
            "required": ["days"],
        },
        "object_key": "alice/my-bot/1.0.0/abc.zip",
    }
    values.update(overrides)
    return CustomBotVersion(**values)


class FakeCatalog:
    def __init__(self, *versions: CustomBotVersion) -> None:
        self.versions = versions

    async def has_custom_bot(self, session: object, owner_id: str, name: str) -> bool:
        return any(v.owner_id == owner_id and v.name == name for v in self.versions)

    async def find_version(
        self, session: object, owner_id: str, name: str, version: str
    ) -> CustomBotVersion | None:
        for v in self.versions:
            if (v.owner_id, v.name, v.version) == (owner_id, name, version):
                return v
        return None

    async def get(self, session: object, owner_id: str, custom_bot_id: str) -> CustomBotVersion | None:
        return next((v for v in self.versions if v.id == custom_bot_id and v.owner_id == owner_id), None)


GOOD = {
    "type": "scheduled/my-bot",
    "version": "1.0.0",
    "schedule": "*/5 * * * *",
    "symbol": "BTCUSD",
    "quantity": 2,
}


async def check(
    config: dict[str, Any], *versions: CustomBotVersion, owner: str = "alice", schema: str = "bot"
):
    catalog = FakeCatalog(*(versions or (version(),)))
    return await validate_config(None, catalog, owner, config, schema=schema)  # type: ignore[arg-type]


async def error_of(config: dict[str, Any], *versions: CustomBotVersion, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await check(config, *versions, **kwargs)
    return caught.value


def fields(error: ApiError) -> list[str]:
    return [v.field for v in error.violations]


async def test_a_good_config_resolves_the_version():
    validated = await check(dict(GOOD))
    assert validated.custom_bot.id == "cb-1"
    assert validated.schedule == "*/5 * * * *"
    assert validated.bot_type == "scheduled"


async def test_struct_floats_become_integers():
    validated = await check(GOOD | {"quantity": 2.0})
    assert validated.config["quantity"] == 2 and isinstance(validated.config["quantity"], int)
    assert normalise({"a": [1.5, 3.0]}) == {"a": [1.5, 3]}


async def test_type_must_match_the_custom_bots_real_type():
    error = await error_of(GOOD | {"type": "realtime/my-bot"})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert "config.type" in fields(error)


@pytest.mark.parametrize("bad_type", ["my-bot", "cron/my-bot", "scheduled/My Bot", "", 5])
async def test_type_must_be_kind_slash_name(bad_type):
    error = await error_of(GOOD | {"type": bad_type})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(error) == ["config.type"]


async def test_missing_type_and_version_are_both_reported():
    error = await error_of({"symbol": "BTCUSD"})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(error) == ["config.type", "config.version"]


async def test_unknown_custom_bot_and_unknown_version_are_not_found():
    error = await error_of(GOOD | {"type": "scheduled/other-bot"})
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    error = await error_of(GOOD | {"version": "9.9.9"})
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert error.metadata["version"] == "9.9.9"


async def test_another_owners_custom_bot_is_not_found():
    error = await error_of(dict(GOOD), owner="mallory")
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


@pytest.mark.parametrize("state", ["PENDING_REVIEW", "DECLINED", "AWAITING_HUMAN_REVIEW"])
async def test_an_unapproved_version_is_refused(state):
    error = await error_of(dict(GOOD), version(state=state))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CUSTOM_BOT_NOT_APPROVED")
    assert error.metadata["state"] == state


@pytest.mark.parametrize("schedule", ["61 * * * *", "* * * *", "0 0 * * * *", "@daily", "every minute", 5])
async def test_a_bad_cron_is_refused(schedule):
    error = await error_of(GOOD | {"schedule": schedule})
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(error) == ["config.schedule"]


async def test_scheduled_bots_need_a_schedule_and_others_refuse_one():
    config = {k: v for k, v in GOOD.items() if k != "schedule"}
    error = await error_of(config)
    assert (error.code, error.reason, fields(error)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONFIG_INVALID",
        ["config.schedule"],
    )
    realtime = version(type="realtime")
    assert (await check(config | {"type": "realtime/my-bot"}, realtime)).schedule is None
    error = await error_of(GOOD | {"type": "realtime/my-bot"}, realtime)
    assert (error.reason, fields(error)) == ("CONFIG_INVALID", ["config.schedule"])


async def test_every_schema_violation_is_reported_at_once():
    config = {
        "type": "scheduled/my-bot",
        "version": "1.0.0",
        "schedule": "0 * * * *",
        "quantity": 0,
        "limits": {"max": 99},
        "tags": ["ok", 3],
        "extra": True,
        "other": 1,
    }
    error = await error_of(config)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fields(error) == sorted(
        [
            "config.symbol",
            "config.quantity",
            "config.limits.max",
            "config.tags.1",
            "config.extra",
            "config.other",
        ]
    )
    assert all(v.description for v in error.violations)


async def test_schema_and_shape_problems_arrive_together_with_a_bad_cron():
    error = await error_of(GOOD | {"type": "realtime/my-bot", "schedule": "nope"}, version(type="realtime"))
    assert error.reason == "CONFIG_INVALID"
    assert fields(error) == ["config.schedule"]


async def test_backtests_use_the_backtest_schema_and_need_its_entrypoint():
    config = {"type": "scheduled/my-bot", "version": "1.0.0"}
    error = await error_of(config, schema="backtest")
    assert (error.reason, fields(error)) == ("CONFIG_INVALID", ["config.days"])
    assert (await check(config | {"days": 30}, schema="backtest")).config["days"] == 30
    error = await error_of(config | {"days": 30}, version(entrypoints={"bot": "main.py"}), schema="backtest")
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BACKTEST_NOT_SUPPORTED")


async def test_an_oversized_config_is_refused():
    error = await error_of(GOOD | {"symbol": "x" * 70_000})
    assert (error.code, error.reason, fields(error)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONFIG_INVALID",
        ["config"],
    )
