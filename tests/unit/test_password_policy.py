"""The password policy (NIST SP 800-63B): length, the shipped breached list, trivial patterns, no composition rules."""

from __future__ import annotations

import pytest

from the0.server.identity.password_policy import PasswordPolicy, common_passwords

POLICY = PasswordPolicy()


@pytest.mark.parametrize("password", [
    "short pass",            # 10 < 12
    "password1234",          # the shipped list
    "PASSWORD1234",          # any case
    "correct horse battery staple",  # the list, spaces ignored
    "aaaaaaaaaaaaaaaa",      # one character repeated
    "abcabcabcabc",          # a short unit repeated
    "123456789012",          # an ascending run (wrapping)
    "zyxwvutsrqpo",          # a descending run
    "qwertyuiopqw",          # a keyboard row
    "ada@example.com",       # the email
    "adalovelace1815",       # the username
])
def test_refused(password: str) -> None:
    assert POLICY.problems(password, email="ada@example.com", username="adalovelace1815"), password


@pytest.mark.parametrize("password", [
    "ada trades at dawn, slowly",   # spaces and punctuation welcome
    "alllowercaseletters",          # no composition rules
    "ünïcødé påsswörd ok",
])
def test_accepted(password: str) -> None:
    assert POLICY.problems(password, email="ada@example.com", username="ada") == []


def test_the_minimum_is_configurable_and_the_list_is_shipped() -> None:
    assert PasswordPolicy(min_length=16).problems("fourteen chars") == ["must be at least 16 characters"]
    assert PasswordPolicy(min_length=8).problems("kestrel9") == []
    assert len(common_passwords()) > 150 and "password" in common_passwords()
    assert POLICY.problems("x" * 1025) == ["must be at most 1024 characters"]
