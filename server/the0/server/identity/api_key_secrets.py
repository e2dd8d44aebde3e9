"""API key secrets: ``the0_`` + 32 base62 characters + a 6-character base62 CRC32.

GitHub-style: the fixed prefix makes leaked keys scannable, and the checksum
lets the server reject a mistyped or made-up key without a database lookup.
Only HMAC-SHA256(server key, secret) is stored, with a short display prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib

PREFIX = "the0_"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
DISPLAY_PREFIX_LENGTH = 10  # "the0_" + 5 random characters
_BASE62 = string.digits + string.ascii_letters
_SHAPE = re.compile(rf"^{PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}$")


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), CHECKSUM_LENGTH)


def new_secret() -> str:
    random_part = "".join(secrets.choice(_BASE62) for _ in range(RANDOM_LENGTH))
    return PREFIX + random_part + _checksum(random_part)


def is_well_formed(secret: str) -> bool:
    """Shape and checksum only: no lookup for keys that cannot be ours."""
    if not _SHAPE.match(secret):
        return False
    random_part = secret[len(PREFIX) : len(PREFIX) + RANDOM_LENGTH]
    return hmac.compare_digest(secret[-CHECKSUM_LENGTH:], _checksum(random_part))


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LENGTH]


class ApiKeyHasher:
    def __init__(self, server_secret: str) -> None:
        # A key of its own, derived from the server secret (as page tokens do).
        self._key = hmac.new(server_secret.encode(), b"the0 api keys v1", hashlib.sha256).digest()

    def hash(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()
