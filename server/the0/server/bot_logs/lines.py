"""Log lines as they arrive (runtime messages, day files), made safe to store.

A runtime message is JSON, one line ``{"time", "level"?, "text", "seq"?}`` or a
batch ``{"lines": [...]}``; anything else is taken as one plain-text line at the
message's time. Text is capped at MAX_LINE_BYTES (cut on a character boundary) and
NUL characters are removed (PostgreSQL text cannot hold them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_LINE_BYTES = 4096
MAX_LEVEL_CHARS = 16
# Lines of one JetStream message share its sequence: seq = stream sequence * this + index.
LINES_PER_MESSAGE = 1024
_DAY_LINE = re.compile(r"^\[([^\]]{1,64})\]\s?(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class LogLine:
    bot_id: str
    ts: datetime
    seq: int
    level: str
    text: str


def clean_text(text: str) -> str:
    text = text.replace("\x00", "")
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= MAX_LINE_BYTES:
        return text
    return encoded[:MAX_LINE_BYTES].decode("utf-8", "ignore")


def _time(value: Any, default: datetime) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return default
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return default
    return default


def _line(bot_id: str, item: Any, default_time: datetime, fallback_seq: int) -> LogLine | None:
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        return None
    seq = item.get("seq")
    level = item.get("level")
    return LogLine(
        bot_id=bot_id,
        ts=_time(item.get("time"), default_time),
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**62 else fallback_seq,
        level=clean_text(level)[:MAX_LEVEL_CHARS] if isinstance(level, str) else "",
        text=clean_text(item["text"]),
    )


def parse_message(bot_id: str, data: bytes, *, stream_seq: int, received: datetime) -> Iterator[LogLine]:
    """The lines of one runtime message; ``stream_seq`` keys lines that carry no sequence."""
    base = stream_seq * LINES_PER_MESSAGE
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("lines"), list):
        items = payload["lines"][:LINES_PER_MESSAGE]
    elif isinstance(payload, dict) and "text" in payload:
        items = [payload]
    else:
        text = data.decode("utf-8", "replace").rstrip("\n")
        yield LogLine(bot_id, received, base, "", clean_text(text))
        return
    for index, item in enumerate(items):
        line = _line(bot_id, item, received, base + index)
        if line is not None:
            yield line


def parse_day_line(bot_id: str, raw: str, *, line_number: int, day: datetime) -> LogLine:
    """One ``[timestamp] text`` line of the original platform's day files.

    Imported lines get negative sequences (-line number), which never meet the
    runtime's, so importing a file twice adds nothing.
    """
    match = _DAY_LINE.match(raw.rstrip("\r\n"))
    if match is None:
        return LogLine(bot_id, day, -line_number, "", clean_text(raw.rstrip("\r\n")))
    return LogLine(bot_id, _time(match.group(1), day), -line_number, "", clean_text(match.group(2)))
