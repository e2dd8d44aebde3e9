"""TOTP codes, recovery codes and sealed secrets (identity/totp.py), with pyotp as the app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from the0.server.identity import totp
from the0.server.identity.two_factor import SecondFactor
from the0.server.keys import key_ring
from the0.server.secrets.box import ConfigSecrets, SecretUnreadable

NOW = datetime(2026, 12, 2, 12, 0, 10, tzinfo=UTC)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
RING = key_ring((("s1", "a" * 40),), None)


def test_a_code_of_the_step_or_one_either_side_is_accepted_once() -> None:
    secret = totp.new_secret()
    app = pyotp.TOTP(secret)
    step = app.timecode(NOW)
    for offset in (-1, 0, 1):
        code = app.at(NOW + timedelta(seconds=30 * offset))
        assert totp.matching_step(secret, code, NOW, after_step=None) == step + offset
    assert totp.matching_step(secret, app.at(NOW + timedelta(seconds=60)), NOW, after_step=None) is None
    assert totp.matching_step(secret, app.at(NOW - timedelta(seconds=60)), NOW, after_step=None) is None
    # The step last accepted, and those before it, are spent.
    assert totp.matching_step(secret, app.at(NOW), NOW, after_step=step) is None
    assert totp.matching_step(secret, app.at(NOW - timedelta(seconds=30)), NOW, after_step=step) is None
    assert totp.matching_step(secret, app.at(NOW + timedelta(seconds=30)), NOW, after_step=step) == step + 1
    for malformed in ("", "12345", "1234567", "12a456", "１２３４５６"):
        assert totp.matching_step(secret, malformed, NOW, after_step=None) is None
    for malformed in ("12345", "12a456", "１２３４５６"):
        assert [v.field for v in SecondFactor(code=malformed).violations()] == ["code"]
    assert SecondFactor(code="123456").violations() == []


def test_the_provisioning_uri_names_the0_and_the_account() -> None:
    uri = totp.provisioning_uri(SECRET, "ada@example.com")
    assert uri.startswith("otpauth://totp/the0:ada%40example.com?") and "issuer=the0" in uri
    assert pyotp.parse_uri(uri).secret == SECRET


def test_recovery_codes_are_distinct_long_and_hashed_whatever_their_spelling() -> None:
    codes = totp.new_recovery_codes()
    assert len(set(codes)) == totp.RECOVERY_CODE_COUNT
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    code = codes[0]
    assert totp.hash_recovery_code(code) == totp.hash_recovery_code(code.upper().replace("-", " "))
    assert totp.hash_recovery_code(code) != totp.hash_recovery_code(codes[1])
    assert code not in totp.hash_recovery_code(code)


def test_a_sealed_secret_opens_only_for_its_account() -> None:
    sealer = totp.TotpSecrets(ConfigSecrets(RING))
    sealed = sealer.seal("user-1", SECRET)
    assert sealed.startswith("the0-secret:v1:s1:") and SECRET not in sealed
    assert sealer.open("user-1", sealed) == SECRET
    with pytest.raises(SecretUnreadable):
        sealer.open("user-2", sealed)
    assert "a" * 40 not in repr(sealer)
