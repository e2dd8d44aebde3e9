"""Each domain's page-token signer, keyed from the server secret."""

from __future__ import annotations

import hashlib
import hmac

from the0.server.pagination import PageTokens
from the0.server.settings import Settings


def page_tokens_for(settings: Settings, domain: str) -> PageTokens:
    """A key of its own per domain, so a page token of one domain's list is refused by another's."""
    if not settings.jwt_secret:
        raise ValueError("settings.jwt_secret is required (dev mode generates one)")
    key = hmac.new(settings.jwt_secret.encode(), f"the0 {domain}".encode(), hashlib.sha256).digest()
    return PageTokens(key)
