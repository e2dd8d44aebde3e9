"""JSON-lines logging: one object per line on stderr, with the current request id.

Application logs go through the ``logging`` module (``JsonFormatter``). The
per-RPC access line is written by ``AccessLog`` directly: it runs on every
call, and the generic logging path (caller lookup, record, locks) costs more
than the RPC itself. Both produce the same fields.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

import orjson

from the0.server.request_context import request_id_var

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
# Every line names its process: with THE0_WORKERS > 1 several server processes share one stderr.
_pid = os.getpid()


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "requestId": request_id_var.get(),
            "pid": _pid,
        }
        # Structured fields passed with `extra={...}`.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """One JSON line per RPC: method, code, duration, peer, request id."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream
        self.enabled = enabled

    def write(self, *, method: str, code: str, duration_ms: float, peer: str, request_id: str) -> None:
        now = time.time()
        line = orjson.dumps(
            {
                "ts": _timestamp(now),
                "level": "info",
                "logger": "the0.rpc",
                "msg": "rpc",
                "requestId": request_id,
                "method": method,
                "code": code,
                "durationMs": round(duration_ms, 2),
                "peer": peer,
                "pid": _pid,
            }
        )
        (self._stream or sys.stderr).write(line.decode() + "\n")


def configure_logging(level: str = "INFO") -> None:
    """Route every logger to stderr as JSON. Idempotent."""
    global _pid
    _pid = os.getpid()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter we never want at INFO.
    for noisy in ("werkzeug", "botocore", "urllib3", "alembic.runtime.migration", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
