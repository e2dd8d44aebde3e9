"""API key scopes: the grammar, and whether a key's scopes cover an RPC's declared access.

An RPC declares what it does once, in the proto: ``(the0.common.v1.access) = {level, resource}``.
The scope it needs is ``<resource>:<level>`` (``bots:write``). A key's scopes, fixed at creation:

- ``full``: everything an API key can call (the default, and what every key could do before scopes);
- ``read``: every read RPC;
- ``<resource>:read``: the read RPCs of that resource;
- ``<resource>:write``: the reads and writes of that resource (writing without reading is of no use).

Resources a key can name are those of the RPCs that accept API keys (``KEY_RESOURCES``); the
pattern in ``api_key.proto`` (buf.validate) spells the same grammar, and a unit test keeps the
two in step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from the0.common.v1 import access_pb2

FULL = "full"
READ = "read"
DEFAULT_SCOPES: tuple[str, ...] = (FULL,)
# Resources whose RPCs accept API keys (the others are session-only, so a scope naming them could
# never be used).
KEY_RESOURCES = ("account", "bots", "custom_bots", "backtests")
SCOPE = re.compile(rf"^({FULL}|{READ}|({'|'.join(KEY_RESOURCES)}):(read|write))$")
MAX_SCOPES = 16

_LEVELS = {access_pb2.ACCESS_LEVEL_READ: "read", access_pb2.ACCESS_LEVEL_WRITE: "write"}
_RESOURCE_PREFIX = "RESOURCE_KIND_"


@dataclass(frozen=True, slots=True)
class Access:
    """What an RPC does: ``level`` is ``read`` or ``write``, ``resource`` a lower-case kind."""

    level: str
    resource: str

    @property
    def scope(self) -> str:
        """The narrowest scope that allows it (``bots:write``)."""
        return f"{self.resource}:{self.level}"

    @classmethod
    def from_proto(cls, access: access_pb2.Access) -> Access:
        level = _LEVELS.get(access.level)
        if level is None or access.resource == access_pb2.RESOURCE_KIND_UNSPECIFIED:
            raise ValueError(f"incomplete access option: {access}")
        name = access_pb2.ResourceKind.Name(access.resource)
        return cls(level, name.removeprefix(_RESOURCE_PREFIX).lower())


def allows(scopes: Iterable[str], access: Access) -> bool:
    """Whether a key holding ``scopes`` may make a call that does ``access``."""
    held = set(scopes)
    if FULL in held or f"{access.resource}:write" in held:
        return True
    return access.level == "read" and (READ in held or f"{access.resource}:read" in held)


def normalise(scopes: Iterable[str]) -> tuple[str, ...]:
    """What is stored: the scopes as given (validated by buf.validate first), ``full`` if none."""
    unique = tuple(dict.fromkeys(s.strip() for s in scopes))
    return unique or DEFAULT_SCOPES


def invalid(scopes: Iterable[str]) -> list[tuple[int, str]]:
    """``(index, scope)`` of every scope outside the grammar (buf.validate checks it too)."""
    return [(i, s) for i, s in enumerate(scopes) if not SCOPE.match(s)]


def to_column(scopes: Iterable[str]) -> str:
    """Stored as one space-separated string: the same on PostgreSQL and SQLite."""
    return " ".join(scopes)


def from_column(value: str | None) -> tuple[str, ...]:
    return tuple(value.split()) if value else DEFAULT_SCOPES
