"""Password-reset and email-verification tokens sealed for the platform's mailer (THE0_MAILER_KEY).

The mailer needs the token itself, but the outbox row and the JetStream message that carry it
there are stored and kept (for the dedup window, and in backups): in clear, whoever reads the
database or the stream could reset anyone's password. So the event carries ``sealedToken``
(``sealing.py``)::

    the0-mail:v1:<kid>:<base64url, unpadded, of nonce (12 bytes) | AES-256-GCM ciphertext and tag>

- key: HKDF-SHA256 of the kid's secret (its UTF-8 bytes), no salt, info ``the0 mailer tokens v1``,
  32 bytes;
- associated data: ``<event type>\\n<userId>`` in UTF-8, so a token copied into another account's or
  purpose's event does not open.

A ring of its own, one key per purpose: the mailer holds this key only and can open no bot-config
or TOTP secret (THE0_SECRETS_KEY), and a leak of it exposes only tokens that soon expire (30 minutes
for a reset, a day for a verification, by default). Rotation: put the new key first; the old one can
go once the tokens it sealed have expired.
``MailTokens.open`` is what a mailer written in Python calls (the dev mailbox does).
"""

from __future__ import annotations

from the0.server.keys import KeyRing, key_ring
from the0.server.secrets.sealing import SealingRing, Unopenable
from the0.server.settings import Settings

PREFIX = "the0-mail:v1:"
INFO = b"the0 mailer tokens v1"


class MailTokenUnreadable(Exception):
    """No key of the ring opens the sealed token (a wrong or removed key, or an altered event)."""


def _aad(event_type: str, user_id: str) -> bytes:
    return f"{event_type}\n{user_id}".encode()


class MailTokens:
    def __init__(self, ring: KeyRing) -> None:
        self._sealing = SealingRing(ring, prefix=PREFIX, info=INFO)

    def seal(self, event_type: str, user_id: str, token: str) -> str:
        return self._sealing.seal(token.encode(), _aad(event_type, user_id))

    def open(self, event_type: str, user_id: str, sealed: str) -> str:
        if not self._sealing.is_sealed(sealed):
            raise MailTokenUnreadable("not a sealed mail token")
        try:
            return self._sealing.open(sealed, _aad(event_type, user_id)).decode()
        except Unopenable as error:
            if not error.known:
                raise MailTokenUnreadable(f"sealed with key {error.kid!r}, which this ring does not have") from None
            raise MailTokenUnreadable(f"key {error.kid!r} does not open it for this event and account") from None
        except UnicodeDecodeError:
            raise MailTokenUnreadable("the token is not text") from None


def mail_tokens_for(settings: Settings) -> MailTokens:
    """The sealer of THE0_MAILER_KEY; refuses to start without a key rather than mail tokens in clear."""
    if not settings.mailer_keys:
        raise ValueError("THE0_MAILER_KEY is not set: it seals the reset and verification tokens for the mailer")
    return MailTokens(key_ring(settings.mailer_keys, None))
