"""API key secrets: ``the0_`` + 32 base62 characters + a 6-character base62 CRC32.

GitHub-style: the fixed prefix makes leaked keys scannable, and the checksum
lets the server reject a mistyped or made-up key without a database lookup.
Only HMAC-SHA256(server key, secret) is stored, with a short display prefix.

The hash key has a ring of its own (THE0_API_KEY_HASH_KEYS, keys.py): new keys
are hashed with the current one, and a presented key is looked up under each
key of the ring, so rotating the hash key (or the JWT key) never invalidates
keys already issued. Keep an old hash key configured while keys hashed with it
are still in use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from collections.abc import Callable

from the0.server.keys import KeyRing

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
    def __init__(self, keys: KeyRing) -> None:
        # Derived from each configured secret as earlier versions derived it from JWT_SECRET,
        # so the ring's "jwt-secret" key reproduces the hashes they stored.
        self._keys = [hmac.new(secret, b"the0 api keys v1", hashlib.sha256).digest() for _, secret in keys.secrets]
        self._new_key_listeners: list[Callable[[str], None]] = []

    def on_new_key(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(hash)`` whenever a new key is hashed (the authenticator forgets a cached miss)."""
        self._new_key_listeners.append(listener)

    def hash(self, secret: str) -> str:
        """The hash a new key is stored under (the current hash key). Only for keys being created."""
        key_hash = self._hash(self._keys[0], secret)
        for listener in self._new_key_listeners:
            listener(key_hash)
        return key_hash

    def candidates(self, secret: str) -> list[str]:
        """The hashes ``secret`` may be stored under, current key first."""
        return [self._hash(key, secret) for key in self._keys]

    @staticmethod
    def _hash(key: bytes, secret: str) -> str:
        return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()
