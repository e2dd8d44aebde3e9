"""The event envelope every the0 event travels in (DESIGN.md §4).

JSON ``{id, type, data, timestamp, correlationId}`` on subject ``the0.<type>``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

SUBJECT_PREFIX = "the0."


class MalformedEvent(ValueError):
    """Bytes that are not an envelope: logged, acknowledged and dropped."""


def subject_for(event_type: str) -> str:
    return SUBJECT_PREFIX + event_type


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    data: dict[str, Any]
    id: str = field(default_factory=new_event_id)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    correlation_id: str | None = None

    @property
    def subject(self) -> str:
        return subject_for(self.type)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "data": self.data,
                "timestamp": self.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "correlationId": self.correlation_id,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedEvent("not JSON") from exc
        if not isinstance(body, dict):
            raise MalformedEvent("not a JSON object")
        event_id, event_type, data = body.get("id"), body.get("type"), body.get("data")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 64:
            raise MalformedEvent("id must be a non-empty string of at most 64 characters")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedEvent("type must be a non-empty string")
        if not isinstance(data, dict):
            raise MalformedEvent("data must be an object")
        raw_time = body.get("timestamp")
        try:
            timestamp = datetime.fromisoformat(raw_time) if isinstance(raw_time, str) else datetime.now(UTC)
        except ValueError:
            timestamp = datetime.now(UTC)
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        correlation = body.get("correlationId")
        return cls(
            type=event_type,
            data=data,
            id=event_id,
            timestamp=timestamp,
            correlation_id=correlation if isinstance(correlation, str) else None,
        )
