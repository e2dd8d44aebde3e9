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

A violation at, inside or above a secret field (``writeOnly``, secrets/fields.py) names
the rule it broke, never the message jsonschema wrote: that quotes the value.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from cachetools import LRUCache
from cronsim import CronSim, CronSimError
from jsonschema import ValidationError
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.custom_bots.catalog import CustomBotCatalog, CustomBotVersion
from the0.server.custom_bots.schema_safety import (
    CompiledSchema,
    UnsafeSchema,
    ValidationTimedOut,
    compile_schema,
)
from the0.server.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from the0.server.secrets.fields import Path as SecretPath
from the0.server.secrets.fields import secret_paths, under_secret

SchemaKind = Literal["bot", "backtest"]
BOT_TYPES = ("scheduled", "realtime", "event")
RESERVED_KEYS = ("type", "version", "schedule")
MAX_CONFIG_BYTES = 64 * 1024
# The input gate's bounds of a Struct, repeated here for callers that do not come through it (events).
MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES = 16, 10_000
# Validation runs on a small pool of its own, never on the event loop. A config gets VALIDATION_SECONDS
# of it (every keyword checks the deadline); compiling a version's schema, once per replica and cached,
# gets COMPILE_SECONDS (the meta-schema check of a 5,000-object schema takes ~1.2 s).
VALIDATION_WORKERS = 2
VALIDATION_SECONDS = 1.0
COMPILE_SECONDS = 10.0
_TYPE = re.compile(r"^(scheduled|realtime|event)/([a-z0-9-]{3,50})$")
_MAX_DESCRIPTION = 300
_T = TypeVar("_T")


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
    """Compiled schemas per custom-bot version and schema kind (versions are immutable).

    A schema that cannot be compiled is cached too (as its error), so a stored hostile schema costs one
    safety check per replica, not one per request. The key holds the schema's digest, not the schema.
    """

    def __init__(self, size: int = 256) -> None:
        self._items: LRUCache[tuple[str, str, bytes], CompiledSchema | Exception] = LRUCache(maxsize=size)
        # Lookups come from several worker threads; cachetools caches are not thread-safe.
        self._lock = threading.Lock()

    def get(self, key: str, kind: str, schema: dict[str, Any]) -> CompiledSchema:
        digest = hashlib.sha256(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).digest()
        cache_key = (key, kind, digest)
        with self._lock:
            compiled = self._items.get(cache_key)
        if compiled is None:
            try:
                compiled = compile_schema(schema)
            except (SchemaError, UnsafeSchema, RecursionError) as error:
                compiled = error
            with self._lock:
                self._items[cache_key] = compiled
        if isinstance(compiled, Exception):
            raise _schema_unusable(kind, compiled)
        return compiled


_validators = _ValidatorCache()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """Made on first use (nothing starts at import); a validation that ran over keeps its worker only
    until its next keyword, so the pool cannot fill up with abandoned work for long."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(VALIDATION_WORKERS, thread_name_prefix="config-validation")
        return _pool


def _schema_unusable(kind: str, error: Exception) -> FailedPrecondition:
    """A stored schema that fails today's rules: the config is not at fault, the custom bot is."""
    if isinstance(error, UnsafeSchema):
        detail = "; ".join(p.describe() for p in error.problems[:3])
        message = f"the custom bot's {kind} config schema is refused: {_describe(detail)}"
    else:
        message = f"the custom bot's {kind} config schema does not compile"
    return FailedPrecondition(message, reason="CONFIG_INVALID", metadata={"schema": kind})


def _too_slow() -> InvalidArgument:
    return config_error(
        [FieldViolation("config", f"validation took too long (over {VALIDATION_SECONDS:g} s): simplify it")]
    )


def _path(parts: Iterable[Any]) -> str:
    return ".".join(["config", *(str(p) for p in parts)])


def _describe(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


def schema_violations(
    schema: dict[str, Any],
    values: dict[str, Any],
    *,
    cache_key: str,
    kind: str,
    deadline: float = float("inf"),
    secrets: frozenset[SecretPath] = frozenset(),
) -> list[FieldViolation]:
    """One violation per problem, with the path of the offending field (``config.a.0.b``).

    Runs in a worker thread; raises ``ValidationTimedOut`` once ``time.monotonic()`` passes ``deadline``.
    """
    compiled = _validators.get(cache_key, kind, schema)
    try:
        problems = compiled.errors_within(values, deadline)
    except (RecursionError, Unresolvable) as error:
        # A `$ref` loop that consumes nothing of the config, or a reference that needs a retrieval the
        # registry refuses (only a schema stored before the upload rules can get this far).
        raise _schema_unusable(kind, error) from error
    violations: list[FieldViolation] = []
    # jsonschema yields one `required` error per missing property, in the
    # schema's order: count them per object to know which one each is.
    required_seen: dict[tuple[Any, ...], int] = {}
    for problem in problems:
        violations.extend(_field_violations(problem, required_seen, compiled, secrets))
    return violations


def _field_violations(
    error: ValidationError,
    required_seen: dict[tuple[Any, ...], int],
    compiled: CompiledSchema,
    secrets: frozenset[SecretPath] = frozenset(),
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
        extras = [k for k in instance if k not in known and not compiled.matches_any(patterns, k)]
        if extras:
            return [
                FieldViolation(_path([*path, extra]), "is not allowed by the custom bot's schema")
                for extra in extras
            ]
    if under_secret(path, secrets):
        # jsonschema's message quotes the instance, which is or holds a secret's value.
        rule = error.validator if isinstance(error.validator, str) else "schema"
        return [FieldViolation(_path(path) if path else "config",
                               f"fails the schema's {rule!r} rule (a secret field's value is never shown)")]
    return [FieldViolation(_path(path) if path else "config", _describe(error.message))]


def check_config(
    config: dict[str, Any],
    custom_bot: CustomBotVersion,
    schema: SchemaKind,
    bot_type: str,
    deadline: float = float("inf"),
) -> ValidatedConfig:
    """The rules that need the resolved version: type, schedule, JSON Schema. Raises with all violations.

    CPU-bound on an untrusted schema: call it in a worker thread (``validate_config`` does).
    """
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
        violations.extend(
            schema_violations(
                json_schema, values, cache_key=custom_bot.id, kind=schema, deadline=deadline,
                secrets=secret_paths(json_schema),
            )
        )
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
    prepare: Callable[[dict[str, Any], CustomBotVersion], dict[str, Any]] | None = None,
) -> ValidatedConfig:
    """Resolve and check ``config`` for ``owner_id``; raise the first kind of problem with all its details.

    ``prepare(config, version)`` runs once the version is known, before the schema check: bots use
    it to put back the stored secrets an update omits, so the schema sees the whole config.
    """
    shape = _shape_problem(config)
    if shape is not None:
        raise config_error([FieldViolation("config", shape)])
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
    json_schema = custom_bot.bot_schema if schema == "bot" else custom_bot.backtest_schema
    if json_schema is not None:
        await _off_loop(_validators.get, custom_bot.id, schema, json_schema, seconds=COMPILE_SECONDS)
    if prepare is not None:
        config = prepare(config, custom_bot)
    deadline = time.monotonic() + VALIDATION_SECONDS
    return await _off_loop(check_config, config, custom_bot, schema, bot_type, deadline, seconds=VALIDATION_SECONDS)


async def _off_loop(function: Callable[..., _T], *args: Any, seconds: float) -> _T:
    """``function(*args)`` on the validation pool, refused as too slow after ``seconds``."""
    future = asyncio.get_running_loop().run_in_executor(_executor(), function, *args)
    try:
        return await asyncio.wait_for(future, seconds)
    except (TimeoutError, ValidationTimedOut):
        raise _too_slow() from None


def _shape_problem(config: object) -> str | None:
    """Depth and count of the config's values, walked without recursion (it may be deeper than Python's stack)."""
    if not isinstance(config, dict):
        return "must be an object"
    # Counted as the input gate counts a Struct: the top object is level 1 and not a value itself.
    stack: list[tuple[object, int]] = [(item, 1) for item in config.values()]
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_CONFIG_VALUES:
            return f"must hold at most {MAX_CONFIG_VALUES} values"
        if isinstance(value, dict | list):
            if depth + 1 > MAX_CONFIG_DEPTH:
                return f"must be at most {MAX_CONFIG_DEPTH} levels deep"
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return None
