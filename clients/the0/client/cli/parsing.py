"""Arguments people type: JSON configs (inline or @file), --set key=value, durations and times."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from the0.client.cli.failures import CliError

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def read_at_file(text: str, what: str) -> str:
    """``@path`` is the file's content (``@-`` is stdin); anything else is itself."""
    if not text.startswith("@"):
        return text
    name = text[1:]
    if name == "-":
        import sys

        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except FileNotFoundError:
        raise CliError(f"{what}: no such file: {name}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"{what}: cannot read {name}: {getattr(error, 'strerror', None) or error}") from None


def parse_object(text: str, what: str = "--config") -> dict[str, Any]:
    """A JSON object, inline or from ``@file`` (``.yaml``/``.yml`` files may be YAML)."""
    raw = read_at_file(text, what)
    try:
        value = yaml.safe_load(raw) if text.endswith((".yaml", ".yml")) else json.loads(raw)
    except json.JSONDecodeError as error:
        raise CliError(f"{what} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except yaml.YAMLError as error:
        raise CliError(f"{what} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} must be a JSON object like '{{\"type\": \"scheduled/my-bot\", ...}}'")
    return value


def parse_value(text: str) -> Any:
    """``--set`` values: JSON when they parse (numbers, true, null, [..], {..}, "quoted"), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_sets(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``key=value`` and ``a.b=value`` (nested) into a copy of ``config``."""
    result: dict[str, Any] = json.loads(json.dumps(config))
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise CliError(f"--set takes key=value, got {assignment!r}")
        *parents, last = key.split(".")
        node = result
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = parse_value(value)
    return result


def parse_duration(text: str) -> timedelta | None:
    if match := _DURATION.match(text.strip()):
        amount, unit = match.groups()
        return timedelta(**{_UNITS[unit]: int(amount)})
    return None


def parse_time(text: str, what: str, *, now: datetime | None = None, future: bool = False) -> datetime:
    """``90s``, ``15m``, ``1h``, ``2d``, ``4w`` from now (``future``) or ago, or an ISO 8601 time (naive: UTC)."""
    if (delta := parse_duration(text)) is not None:
        moment = now or datetime.now(UTC)
        return moment + delta if future else moment - delta
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what} must be like 30s, 15m, 1h, 2d, 4w or an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
