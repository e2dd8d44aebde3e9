"""Server keys, one ring per purpose: JWT signing, API-key hashing, page tokens.

A ring is configured as ``kid1:secret1,kid2:secret2``: the first key is current
(it signs or hashes what is made now), the others still verify what they made
before, so a key can be rotated without logging everyone out or invalidating
every API key (docs/operations.md, "Rotating keys").

``JWT_SECRET``, the one secret of earlier versions, is still accepted: it joins
every ring as the key ``jwt-secret`` (last, unless a ring has no key of its own),
derived as those versions did, so tokens and API keys made with it keep working.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEGACY_KID = "jwt-secret"
MIN_SECRET_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Keys by id; ``current`` is the one that signs. Never empty."""

    current: str
    secrets: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.secrets or self.secrets[0][0] != self.current:
            raise ValueError("a key ring starts with its current key")

    def get(self, kid: str) -> bytes | None:
        return dict(self.secrets).get(kid)

    @property
    def current_secret(self) -> bytes:
        return self.secrets[0][1]

    def __repr__(self) -> str:  # never the secrets
        return f"KeyRing(current={self.current!r}, kids={[kid for kid, _ in self.secrets]!r})"


def parse_key_list(name: str, raw: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """``kid:secret,...`` as pairs; each problem names the variable, never a secret."""
    pairs: list[tuple[str, str]] = []
    for position, part in enumerate(p.strip() for p in raw.split(",")):
        kid, sep, secret = part.partition(":")
        kid, secret = kid.strip(), secret.strip()
        if not sep or not _KID.match(kid):
            problems.append(f"{name} entry {position + 1} must be kid:secret with a kid of 1-32 of "
                            "A-Z a-z 0-9 _ . -")
            continue
        if len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(f"{name} key {kid!r} must be at least {MIN_SECRET_BYTES} bytes")
            continue
        if kid in dict(pairs) or kid == LEGACY_KID:
            problems.append(f"{name} key id {kid!r} is used twice (or is the reserved {LEGACY_KID!r})")
            continue
        pairs.append((kid, secret))
    return tuple(pairs)


def key_ring(configured: tuple[tuple[str, str], ...], jwt_secret: str | None) -> KeyRing:
    """The configured keys, then JWT_SECRET as a verify-only key (or the only key if none is configured)."""
    pairs = [(kid, secret.encode()) for kid, secret in configured]
    if jwt_secret:
        pairs.append((LEGACY_KID, jwt_secret.encode()))
    if not pairs:
        raise ValueError("no key configured: set the ring's variable or JWT_SECRET (dev mode generates them)")
    return KeyRing(current=pairs[0][0], secrets=tuple(pairs))
