"""Keyset pagination: page sizes and opaque, signed page tokens.

A token holds the last row's ``(create_time, id)``, the scope it was issued
for (RPC + filter) and the caller it was issued to (the authenticated user id,
from ``request_context.caller_id_var``), signed with HMAC-SHA256 so clients
cannot forge it, reuse it for another query or hand it to another user. The
signer holds the current page-token key and the older ones of its ring: tokens
of a retired key verify until it is removed. Queries continue strictly after that key — never OFFSET,
so page 50 costs what page 1 costs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from the0.server.errors import FieldViolation, InvalidArgument
from the0.server.request_context import caller_id_var

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_MAC_BYTES = 16
Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Cursor:
    """The sort key of the last row of a page (newest first)."""

    create_time: datetime
    id: str


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is clamped (AIP-158); negative is an error."""
    if requested < 0:
        raise InvalidArgument(
            "pageSize must not be negative",
            violations=[FieldViolation("pageSize", f"must be 0 to {MAX_PAGE_SIZE}, got {requested}")],
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PageTokens:
    def __init__(self, secret: bytes, *older: bytes) -> None:
        # Keys of their own, derived from the configured secrets: a page token is never a JWT.
        self._keys = [hmac.new(key, b"the0 page tokens v1", hashlib.sha256).digest() for key in (secret, *older)]

    def encode(self, cursor: Cursor, *, scope: str) -> str:
        payload = json.dumps(
            [cursor.create_time.astimezone(UTC).isoformat(), cursor.id, scope, caller_id_var.get()],
            separators=(",", ":"),
        ).encode()
        return _b64(payload) + "." + _b64(self._mac(self._keys[0], payload))

    def decode(self, token: str, *, scope: str) -> Cursor | None:
        """None for an empty token (first page); InvalidArgument for anything not ours."""
        if not token:
            return None
        try:
            body, _, mac = token.partition(".")
            payload = _unb64(body)
            presented = _unb64(mac)
            # Every key is tried (no early exit), so timing says nothing about which one matched.
            if not sum(hmac.compare_digest(presented, self._mac(key, payload)) for key in self._keys):
                raise ValueError("bad signature")
            create_time, row_id, token_scope, token_caller = json.loads(payload)
            if token_scope != scope:
                raise ValueError("token of another query")
            if token_caller != caller_id_var.get():
                raise ValueError("token of another caller")
            return Cursor(datetime.fromisoformat(create_time), str(row_id))
        except (ValueError, TypeError) as error:
            raise InvalidArgument(
                "pageToken is invalid: use the nextPageToken of the previous page with the same filter",
                reason="INVALID_PAGE_TOKEN",
                violations=[FieldViolation("pageToken", "is not a token this server issued for this query")],
            ) from error

    def page(
        self, rows: Sequence[Row], limit: int, *, scope: str, cursor: Callable[[Row], Cursor]
    ) -> tuple[list[Row], str]:
        """Rows fetched with ``limit + 1``: this page, and the next page's token ("" on the last page)."""
        if len(rows) <= limit:
            return list(rows), ""
        page = list(rows[:limit])
        return page, self.encode(cursor(page[-1]), scope=scope)

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
