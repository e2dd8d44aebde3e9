"""TOTP codes (RFC 6238, with pyotp), their sealed secrets, recovery codes and challenge tokens.

Pure functions and one small sealer; the rules (who may enrol, throttles, replays) live in
``two_factor.py``. Secrets are sealed with the THE0_SECRETS_KEY ring that seals bot-config
secrets (``secrets/box.py``); the associated data binds a sealed secret to its account, so a
value copied onto another account does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp

from the0.server.secrets.box import ConfigSecrets

ISSUER = "the0"
# ±1 step of 30 s: a phone's clock a little off, or a code typed as it changed (RFC 6238 5.2).
WINDOW_STEPS = 1
RECOVERY_CODE_COUNT = 10
# 16 symbols of a 32-letter alphabet (no 0/o, 1/l/i): 80 bits, so an unsalted SHA-256 cannot be
# brute-forced from a database dump; grouped by 4 for reading aloud.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 16
_SEALED_FIELD = ("totpSecret",)


def new_secret() -> str:
    """160 random bits, base32 (RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: datetime, *, after_step: int | None) -> int | None:
    """The time step within the window whose code ``code`` is, if later than ``after_step``; else None.

    A step at or before the last accepted one is refused: a code (or an older one) counts once.
    """
    if not is_code(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    found = None
    for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
        # Every candidate is compared (constant work whichever matches).
        if hmac.compare_digest(totp.generate_otp(step), code) and (after_step is None or step > after_step):
            found = step
    return found


def is_code(text: str) -> bool:
    """Six ASCII digits (``str.isdigit`` also takes other scripts' digits)."""
    return len(text) == 6 and text.isascii() and text.isdigit()


def new_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[i:i + 4] for i in range(0, _RECOVERY_LENGTH, 4)))
    return codes


def hash_recovery_code(code: str) -> str:
    """Of the code as typed, whatever its case, dashes and spaces."""
    normal = "".join(c for c in code.lower() if c not in "- ")
    return hashlib.sha256(normal.encode()).hexdigest()


def new_challenge_token() -> str:
    return secrets.token_urlsafe(32)


def hash_challenge_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TotpSecrets:
    """Seals and opens TOTP secrets with the bot-config secrets' key ring."""

    def __init__(self, box: ConfigSecrets) -> None:
        self._box = box

    def __repr__(self) -> str:
        return f"TotpSecrets({self._box!r})"

    def seal(self, user_id: str, secret: str) -> str:
        return self._box.seal_value(_subject(user_id), _SEALED_FIELD, secret)

    def open(self, user_id: str, sealed: str) -> str:
        value = self._box.open_value(_subject(user_id), _SEALED_FIELD, sealed)
        if not isinstance(value, str):
            raise TypeError("a sealed TOTP secret holds text")
        return value

    def reseal(self, user_id: str, sealed: str) -> str | None:
        """``sealed`` sealed again under the ring's current key; None if it already is."""
        if self._box.is_current(sealed):
            return None
        return self.seal(user_id, self.open(user_id, sealed))


def _subject(user_id: str) -> str:
    # Not a bot id (those are bare UUIDs): the same ring never opens a bot's secret as a user's.
    return f"user:{user_id}"
