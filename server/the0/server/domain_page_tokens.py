"""Each domain's page-token signer, keyed from the page-token key ring (keys.py)."""

from __future__ import annotations

import hashlib
import hmac

from the0.server.keys import key_ring
from the0.server.pagination import PageTokens
from the0.server.settings import Settings


def page_tokens_for(settings: Settings, domain: str) -> PageTokens:
    """A key of its own per domain, so a page token of one domain's list is refused by another's.

    Signed with the ring's current key; the older keys still verify (THE0_PAGE_TOKEN_KEYS).
    """
    ring = key_ring(settings.page_token_keys, settings.jwt_secret)
    current, *older = (hmac.new(secret, f"the0 {domain}".encode(), hashlib.sha256).digest()
                       for _, secret in ring.secrets)
    return PageTokens(current, *older)
