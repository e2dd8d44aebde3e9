"""Service keys: made here, stored as SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "the0svc_"
# Keys from the environment are at least this long (settings.py checks it); ours are 51.
MIN_KEY_LENGTH = 32
MAX_KEY_LENGTH = 256


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
