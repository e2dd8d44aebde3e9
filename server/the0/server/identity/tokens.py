"""Access tokens (JWT, HS256 pinned) and opaque refresh tokens.

Verification maps every failure to exactly one ErrorReason: TOKEN_EXPIRED for
a well-formed, correctly signed token past its ``exp``; TOKEN_INVALID for
anything else (bad signature, other algorithm, wrong iss/aud/typ, missing
claims, garbage, a ``kid`` no configured key has). Revocation is checked by the
caller against the in-memory set.

Tokens carry the ``kid`` of the key that signed them (the ring's current key);
any key of the ring verifies its own tokens, so a new key can be introduced and
an old one retired without logging anybody out. Tokens without a ``kid`` (made
before key ids) are tried against each key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cachetools import LRUCache

from the0.server.errors import Unauthenticated
from the0.server.keys import KeyRing

ALGORITHM = "HS256"
ISSUER = "the0-api"
AUDIENCE = "the0"
ACCESS_TYPE = "access"
REQUIRED_CLAIMS = ("sub", "sid", "role", "iss", "aud", "iat", "exp", "jti", "typ")
ROLES = ("user", "admin")
LEEWAY_SECONDS = 5
_MAX_VERIFIED = 10_000


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    session_id: str
    role: str
    expires_at: datetime


class AccessTokens:
    def __init__(self, keys: KeyRing, lifetime: timedelta) -> None:
        self._keys = keys
        self.lifetime = lifetime
        self._verified: LRUCache[str, AccessClaims] = LRUCache(maxsize=_MAX_VERIFIED)

    def issue(self, *, user_id: str, session_id: str, role: str, now: datetime | None = None) -> tuple[str, datetime]:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + self.lifetime
        claims = {
            "sub": user_id,
            "sid": session_id,
            "role": role,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
            "typ": ACCESS_TYPE,
        }
        token = jwt.encode(claims, self._keys.current_secret, algorithm=ALGORITHM,
                           headers={"kid": self._keys.current})
        return token, expires

    def verify(self, token: str) -> AccessClaims:
        """Verify ``token``; a token verified before is only re-checked for expiry.

        Caching by the exact token string is sound: the same bytes carry the same
        signature and claims. It spares the JSON/HMAC work on every request.
        """
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at.timestamp() + LEEWAY_SECONDS < time.time():
                self._verified.pop(token, None)
                raise Unauthenticated("the access token has expired; refresh it", reason="TOKEN_EXPIRED")
            return cached
        claims = self._verify_uncached(token)
        self._verified[token] = claims
        return claims

    def _candidate_keys(self, token: str) -> list[bytes]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _invalid() from None
        if kid is None:
            return [secret for _, secret in self._keys.secrets]
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid()
        return [key]

    def _verify_uncached(self, token: str) -> AccessClaims:
        *others, last = self._candidate_keys(token)
        for key in others:
            try:
                return self._verify_with(token, key)
            except Unauthenticated as error:
                if error.reason != "TOKEN_INVALID":
                    raise
        return self._verify_with(token, last)

    def _verify_with(self, token: str, key: bytes) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # pinned: never "none", never RS256 with our secret as a key
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": list(REQUIRED_CLAIMS)},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired; refresh it", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise _invalid() from None
        if (
            claims.get("typ") != ACCESS_TYPE
            or claims.get("role") not in ROLES
            or not isinstance(claims.get("sub"), str)
            or not isinstance(claims.get("sid"), str)
        ):
            raise _invalid()
        return AccessClaims(
            user_id=claims["sub"],
            session_id=claims["sid"],
            role=claims["role"],
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )


def _invalid() -> Unauthenticated:
    # Deliberately vague: which check failed helps an attacker, not a client.
    return Unauthenticated("the access token is not valid", reason="TOKEN_INVALID")


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """SHA-256 is enough: the token has 256 random bits, nothing to brute-force."""
    return hashlib.sha256(token.encode()).hexdigest()
