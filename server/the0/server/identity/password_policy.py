"""The password policy of NIST SP 800-63B (5.1.1.2): length, a blocklist, no composition rules.

A password is at least ``min_length`` characters (12 by default, configurable, never under 8) and at
most 1,024; any characters, spaces included, and no rule about digits or symbols. Refused: the
account's own email, its local part or username, a commonly breached password (``data/
common_passwords.txt``, compared case-insensitively), and trivial patterns — one character or a short
unit repeated, an ascending or descending run (``123456789012``, ``abcdefghijkl``).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from importlib import resources

from the0.server.errors import FieldViolation

PASSWORD_MAX = 1024
ABSOLUTE_MIN = 8  # NIST's floor: the configured minimum cannot go below it
_RUN_ALPHABETS = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "asdfghjkl", "zxcvbnm")


@functools.cache
def common_passwords() -> frozenset[str]:
    text = resources.files("the0.server.identity").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int = 12

    def problems(self, password: str, *, email: str = "", username: str = "") -> list[str]:
        """Why ``password`` is refused (empty: accepted)."""
        if len(password) < self.min_length:
            return [f"must be at least {self.min_length} characters"]
        if len(password) > PASSWORD_MAX:
            return [f"must be at most {PASSWORD_MAX} characters"]
        folded = password.strip().lower()
        own = {v.strip().lower() for v in (email, email.partition("@")[0], username) if v.strip()}
        if folded in own:
            return ["must not be your email address or username"]
        if folded in common_passwords() or folded.replace(" ", "") in common_passwords():
            return ["is a commonly used password found in data breaches; choose another"]
        if _trivial(folded):
            return ["is a trivial pattern (repeated or sequential characters); choose another"]
        return []

    def violations(self, field: str, password: str, *, email: str = "", username: str = "") -> list[FieldViolation]:
        return [FieldViolation(field, p) for p in self.problems(password, email=email, username=username)]


def _trivial(text: str) -> bool:
    compact = text.replace(" ", "")
    if not compact:
        return True
    for unit in range(1, min(4, len(compact) // 2) + 1):  # a short unit repeated: "aaaa…", "abcabc…"
        if len(compact) % unit == 0 and compact == compact[:unit] * (len(compact) // unit):
            return True
    return any(_is_run(compact, alphabet) for alphabet in _RUN_ALPHABETS)


def _is_run(text: str, alphabet: str) -> bool:
    """Every character the next (or previous) of ``alphabet``, wrapping: 1234567890123, zyxwvu…"""
    if not all(c in alphabet for c in text):
        return False
    n = len(alphabet)
    steps = {(alphabet.index(b) - alphabet.index(a)) % n for a, b in itertools.pairwise(text)}
    return steps in ({1}, {n - 1})
