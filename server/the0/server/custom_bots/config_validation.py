"""Validate a bot or backtest config against the owner's custom-bot version.

Part of the custom-bots domain's published interface (with ``catalog``), used by bots and backtests: ``validate_config(session, catalog, owner_id,
config, schema="bot" | "backtest")`` resolves ``config.type`` +
``config.version`` to one of the owner's custom-bot versions and checks the
rest of the config against that version's JSON Schema. Outcomes:

- the shape of ``type``/``version``/``schedule`` is wrong, the type does not
  match the custom bot's real type, or the schema rejects the config:
  INVALID_ARGUMENT, reason CONFIG_INVALID, one field violation per problem
  (``config.symbol``), **all** of them at once;
- the custom bot or the version does not exist (for this owner): NOT_FOUND;
- the version is not APPROVED: FAILED_PRECONDITION, CUSTOM_BOT_NOT_APPROVED;
- a backtest of a version without a backtest entrypoint: FAILED_PRECONDITION,
  BACKTEST_NOT_SUPPORTED.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from cachetools import LRUCache
from cronsim import CronSim, CronSimError
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.custom_bots.catalog import CustomBotCatalog, CustomBotVersion
from the0.server.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

SchemaKind = Literal["bot", "backtest"]
BOT_TYPES = ("scheduled", "realtime", "event")
RESERVED_KEYS = ("type", "version", "schedule")
MAX_CONFIG_BYTES = 64 * 1024
_TYPE = re.compile(r"^(scheduled|realtime|event)/([a-z0-9-]{3,50})$")
_MAX_DESCRIPTION = 300


@dataclass(frozen=True, slots=True)
class ValidatedConfig:
    """A config that passed every rule, and the custom-bot version it runs."""

    config: dict[str, Any]
    custom_bot: CustomBotVersion
    bot_type: str
    schedule: str | None


def config_error(violations: Iterable[FieldViolation]) -> InvalidArgument:
    found = sorted(violations, key=lambda v: (v.field, v.description))
    return InvalidArgument(
        f"config is invalid: {len(found)} problem{'s' if len(found) != 1 else ''} "
        + "; ".join(f"{v.field}: {v.description}" for v in found[:5])
        + (" ..." if len(found) > 5 else ""),
        reason="CONFIG_INVALID",
        metadata={"violations": str(len(found))},
        violations=found,
    )


def normalise(value: Any) -> Any:
    """JSON from protobuf Structs has only floats: 5.0 becomes 5, so "integer" schemas work."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def parse_type(config: dict[str, Any]) -> tuple[tuple[str, str] | None, str | None, list[FieldViolation]]:
    """``(bot_type, custom_bot_name)``, the version, and the violations of both fields."""
    violations = []
    raw_type, version = config.get("type"), config.get("version")
    parsed = None
    if raw_type is None or raw_type == "":
        violations.append(
            FieldViolation("config.type", 'is required: "<scheduled|realtime|event>/<custom-bot name>"')
        )
    elif not isinstance(raw_type, str) or not (match := _TYPE.match(raw_type)):
        violations.append(
            FieldViolation(
                "config.type",
                'must be "<scheduled|realtime|event>/<custom-bot name>", e.g. "scheduled/my-bot"',
            )
        )
    else:
        parsed = (match.group(1), match.group(2))
    if version is None or version == "":
        violations.append(
            FieldViolation("config.version", "is required: an approved version of the custom bot")
        )
        version = None
    elif not isinstance(version, str) or len(version) > 64:
        violations.append(FieldViolation("config.version", 'must be a version string such as "1.0.0"'))
        version = None
    return parsed, version, violations


def check_schedule(config: dict[str, Any], bot_type: str, schema: SchemaKind) -> list[FieldViolation]:
    schedule = config.get("schedule")
    if schedule is None:
        if bot_type == "scheduled" and schema == "bot":
            return [
                FieldViolation("config.schedule", "is required for scheduled bots: a 5-field cron expression")
            ]
        return []
    if bot_type != "scheduled":
        return [FieldViolation("config.schedule", f"is only for scheduled bots; this is a {bot_type} bot")]
    if not isinstance(schedule, str) or len(schedule.split()) != 5:
        return [
            FieldViolation(
                "config.schedule",
                'must be a 5-field cron expression (minute hour day month weekday), e.g. "*/5 * * * *"',
            )
        ]
    try:
        CronSim(schedule, datetime.now(UTC))
    except CronSimError as error:
        return [FieldViolation("config.schedule", f"is not a valid cron expression: {error}")]
    return []


class _ValidatorCache:
    """Compiled validators per custom-bot version and schema (versions are immutable)."""

    def __init__(self, size: int = 256) -> None:
        self._items: LRUCache[tuple[str, str, bytes], Any] = LRUCache(maxsize=size)
        # Requests validate on the event loop and in threads alike; cachetools caches are not thread-safe.
        self._lock = threading.Lock()

    def get(self, key: str, kind: str, schema: dict[str, Any]) -> Any:
        cache_key = (key, kind, orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        with self._lock:
            validator = self._items.get(cache_key)
        if validator is not None:
            return validator
        cls = validator_for(schema, default=Draft202012Validator)
        cls.check_schema(schema)
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        with self._lock:
            self._items[cache_key] = validator
        return validator


_validators = _ValidatorCache()


def _path(parts: Iterable[Any]) -> str:
    return ".".join(["config", *(str(p) for p in parts)])


def _describe(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


def schema_violations(
    schema: dict[str, Any], values: dict[str, Any], *, cache_key: str, kind: str
) -> list[FieldViolation]:
    """One violation per problem, with the path of the offending field (``config.a.0.b``)."""
    try:
        validator = _validators.get(cache_key, kind, schema)
    except SchemaError as error:
        raise FailedPrecondition(
            "the custom bot's config schema does not compile",
            reason="CONFIG_INVALID",
            metadata={"schema": kind},
        ) from error
    violations: list[FieldViolation] = []
    # jsonschema yields one `required` error per missing property, in the
    # schema's order: count them per object to know which one each is.
    required_seen: dict[tuple[Any, ...], int] = {}
    for problem in validator.iter_errors(values):
        violations.extend(_field_violations(problem, required_seen))
    return violations


def _field_violations(
    error: ValidationError, required_seen: dict[tuple[Any, ...], int]
) -> list[FieldViolation]:
    path = list(error.absolute_path)
    instance = error.instance
    if (
        error.validator == "required"
        and isinstance(instance, dict)
        and isinstance(error.validator_value, list)
    ):
        missing = [name for name in error.validator_value if name not in instance]
        key = (*path, id(error.schema))
        index = required_seen.get(key, 0)
        required_seen[key] = index + 1
        if index < len(missing):
            return [FieldViolation(_path([*path, missing[index]]), "is required")]
    if (
        error.validator == "additionalProperties"
        and error.validator_value is False
        and isinstance(instance, dict)
    ):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extras = [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]
        if extras:
            return [
                FieldViolation(_path([*path, extra]), "is not allowed by the custom bot's schema")
                for extra in extras
            ]
    return [FieldViolation(_path(path) if path else "config", _describe(error.message))]


def check_config(
    config: dict[str, Any], custom_bot: CustomBotVersion, schema: SchemaKind, bot_type: str
) -> ValidatedConfig:
    """The rules that need the resolved version: type, schedule, JSON Schema. Raises with all violations."""
    violations: list[FieldViolation] = []
    if bot_type != custom_bot.type:
        violations.append(
            FieldViolation(
                "config.type", f"custom bot {custom_bot.name!r} is a {custom_bot.type} bot, not {bot_type}"
            )
        )
    violations.extend(check_schedule(config, custom_bot.type, schema))
    values = {key: value for key, value in config.items() if key not in RESERVED_KEYS}
    json_schema = custom_bot.bot_schema if schema == "bot" else custom_bot.backtest_schema
    if json_schema is not None:
        violations.extend(schema_violations(json_schema, values, cache_key=custom_bot.id, kind=schema))
    if violations:
        raise config_error(violations)
    schedule = config.get("schedule")
    return ValidatedConfig(
        config=config,
        custom_bot=custom_bot,
        bot_type=custom_bot.type,
        schedule=schedule if isinstance(schedule, str) else None,
    )


async def validate_config(
    session: AsyncSession,
    catalog: CustomBotCatalog,
    owner_id: str,
    config: dict[str, Any],
    *,
    schema: SchemaKind,
) -> ValidatedConfig:
    """Resolve and check ``config`` for ``owner_id``; raise the first kind of problem with all its details."""
    config = normalise(config)
    if not isinstance(config, dict):
        raise config_error([FieldViolation("config", "must be an object")])
    if len(orjson.dumps(config)) > MAX_CONFIG_BYTES:
        raise config_error(
            [FieldViolation("config", f"must be at most {MAX_CONFIG_BYTES // 1024} KiB as JSON")]
        )
    parsed, version, violations = parse_type(config)
    if violations or parsed is None or version is None:
        raise config_error(violations)
    bot_type, name = parsed
    custom_bot = await catalog.find_version(session, owner_id, name, version)
    if custom_bot is None:
        if not await catalog.has_custom_bot(session, owner_id, name):
            raise NotFound(f"custom bot {name!r} not found", metadata={"customBot": name})
        raise NotFound(
            f"custom bot {name!r} has no version {version!r}",
            metadata={"customBot": name, "version": version},
        )
    if not custom_bot.approved:
        raise FailedPrecondition(
            f"custom bot {name!r} version {version} is {custom_bot.state}, not APPROVED",
            reason="CUSTOM_BOT_NOT_APPROVED",
            metadata={"customBot": name, "version": version, "state": custom_bot.state},
        )
    if schema == "backtest" and not custom_bot.entrypoints.get("backtest"):
        raise FailedPrecondition(
            f"custom bot {name!r} version {version} has no backtest entrypoint",
            reason="BACKTEST_NOT_SUPPORTED",
            metadata={"customBot": name, "version": version},
        )
    return check_config(config, custom_bot, schema, bot_type)
