"""Values sealed with AES-256-GCM under a key ring, one purpose per ring: the one format of
bot-config secrets (``box.py``) and of the tokens for the mailer (``mail.py``).

A sealed value is ``<prefix><kid>:<base64url, unpadded, of nonce (12 bytes) | ciphertext and tag>``.
Each key is HKDF-SHA256 of the kid's secret (its bytes; no salt) with the purpose's ``info``, 32
bytes, so one secret reused in two rings still gives two keys. The associated data is the
caller's: it binds a value to where it belongs, so a value copied elsewhere does not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from the0.server.keys import KeyRing

NONCE_BYTES = 12


class Unopenable(Exception):
    """``kid``'s key is not in the ring (``known`` false), or it does not open the value."""

    def __init__(self, kid: str, *, known: bool) -> None:
        super().__init__(kid)
        self.kid = kid
        self.known = known


class SealingRing:
    def __init__(self, ring: KeyRing, *, prefix: str, info: bytes) -> None:
        self._prefix = prefix
        self.current_kid = ring.current
        self._ciphers = {
            kid: AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret))
            for kid, secret in ring.secrets
        }

    def is_sealed(self, value: str) -> bool:
        return value.startswith(self._prefix)

    def kid_of(self, sealed: str) -> str:
        return sealed.removeprefix(self._prefix).partition(":")[0]

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_kid].encrypt(nonce, plaintext, aad)
        return f"{self._prefix}{self.current_kid}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def open(self, sealed: str, aad: bytes) -> bytes:
        kid, _, body = sealed.removeprefix(self._prefix).partition(":")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise Unopenable(kid, known=False)
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError, binascii.Error):
            raise Unopenable(kid, known=True) from None
