"""Credentials never reach a log line: URLs are logged without their userinfo.

``NATS_URL`` and ``DATABASE_URL`` may carry a user and password
(``nats://user:secret@host:4222``); everything that logs or prints one goes
through ``redact_url``. A URL we cannot parse is replaced whole: better an
unhelpful line than a leaked password.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (query strings are kept out too)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc and not parts.query:
        return url
    netloc = (f"{REDACTED}@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host)
    if port is not None:
        netloc += f":{port}"
    # A query may hold a password too (postgresql://h/db?password=...).
    return urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", ""))


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with ``url``, and its user and password, replaced."""
    try:
        parts = urlsplit(url)
        secrets = [url, parts.password, parts.username]
    except ValueError:
        secrets = [url]
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
