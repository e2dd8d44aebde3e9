"""Fields of inbound runtime events, read once for every domain's consumers.

A malformed field raises ``DropEvent``: the consumer logs, acks and drops the
event (a redelivery would be just as malformed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from the0.server.events.consumer import DropEvent


def required_string(data: dict[str, Any], key: str, *, max_chars: int = 200) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise DropEvent(f"data.{key} must be a non-empty string")
    return value


def optional_string(data: dict[str, Any], key: str, *, max_chars: int = 200) -> str | None:
    if data.get(key) is None:
        return None
    return required_string(data, key, max_chars=max_chars)


def event_time(data: dict[str, Any], key: str, fallback: datetime) -> datetime:
    """``data[key]`` as an aware UTC time (naive means UTC); ``fallback`` (the envelope's time) if absent."""
    value = data.get(key)
    if value is None:
        return fallback.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as error:
        raise DropEvent(f"data.{key} is not an ISO 8601 time") from error
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def optional_object(data: dict[str, Any], key: str, *, max_bytes: int) -> dict[str, Any] | None:
    """``data[key]`` if it is a JSON object of at most ``max_bytes``; None if absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DropEvent(f"data.{key} must be an object")
    if len(orjson.dumps(value)) > max_bytes:
        raise DropEvent(f"data.{key} is larger than {max_bytes // 1024} KiB")
    return value
