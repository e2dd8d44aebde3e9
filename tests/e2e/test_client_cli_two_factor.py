"""`the0 2fa` and a two-step `the0 login`, run as a person runs them (subprocesses; a pseudo-terminal for
the prompts), against the real stack. Codes come from pyotp, as an authenticator app makes them."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import pexpect
import pyotp
import pytest

from tests.e2e.test_client_cli import PASSWORD, Person, in_pty
from the0.client import The0Client
from the0.client.aio import AsyncThe0Client

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory()


def code_at(totp: pyotp.TOTP, steps_ahead: int) -> str:
    return totp.at(time.time() + steps_ahead * 30)


async def test_enable_login_with_a_code_and_disable_piped(stack, tmp_path: Path) -> None:
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    email = ada.saved()["email"]
    assert (await ada.ok("2fa", "status")).json() == {"twoFactorEnabled": False}

    begun = await ada.ok("2fa", "enable", "--password-stdin", stdin=PASSWORD + "\n")  # no terminal: only begins, and says how to finish
    enrollment = begun.json()
    assert enrollment["provisioningUri"].startswith("otpauth://totp/the0:") and "2fa enable --code" in begun.err
    totp = pyotp.TOTP(enrollment["secret"])
    first = totp.now()
    confirmed = (await ada.ok("2fa", "enable", "--code", first)).json()
    codes = confirmed["recoveryCodes"]
    assert confirmed["twoFactorEnabled"] is True and len(codes) == 10
    assert (await ada.ok("2fa", "status")).json() == {"twoFactorEnabled": True}
    assert (await ada.ok("whoami")).json()["twoFactorEnabled"] is True

    await ada.ok("logout")
    no_code = await ada.run("login", "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert no_code.code == 2 and "--code" in no_code.error_line
    assert not ada.saved().get("accessToken")  # the password alone saved no session
    spent = await ada.run("login", "--email", email, "--password-stdin", "--code", first, stdin=PASSWORD + "\n")
    assert spent.code == 3 and "each code works once" in spent.error_line
    await ada.ok("login", "--email", email, "--password-stdin", "--code", code_at(totp, 1), stdin=PASSWORD + "\n")
    assert ada.saved()["accessToken"]
    await ada.ok("api-keys", "create", "terminal")  # a fresh second factor
    await ada.ok("login", "--email", email, "--password-stdin", "--recovery-code", codes[0],
                 stdin=PASSWORD + "\n")
    reused = await ada.run("login", "--email", email, "--password-stdin", "--recovery-code", codes[0],
                           stdin=PASSWORD + "\n")
    assert reused.code == 3

    wrong_password = await ada.run("2fa", "disable", "--password-stdin", "--recovery-code", codes[1],
                                   stdin="not the password at all\n")
    assert wrong_password.code == 3 and "INVALID_CREDENTIALS" in wrong_password.error_line
    assert (await ada.ok("2fa", "disable", "--password-stdin", "--recovery-code", codes[1],
                         stdin=PASSWORD + "\n")).json() == {"twoFactorEnabled": False}
    off = await ada.run("2fa", "disable", "--password-stdin", "--recovery-code", codes[2], stdin=PASSWORD + "\n")
    assert off.code == 6 and "TOTP_NOT_ENABLED" in off.error_line
    await ada.ok("login", "--email", email, "--password-stdin", stdin=PASSWORD + "\n")  # one step again


async def test_at_a_terminal_enable_prompts_for_the_first_code_and_login_for_the_next(stack, tmp_path: Path) -> None:
    bob = Person(tmp_path / "bob", url=stack.grpc_target)
    await bob.register()
    email = bob.saved()["email"]

    def enrol() -> tuple[int, str, str]:
        child = bob.spawn("2fa", "enable")
        child.expect("Password: ")
        child.sendline(PASSWORD)
        child.expect(r"secret: ([A-Z2-7]+)")
        secret = child.match.group(1)
        seen = child.before + child.after
        child.expect("First code from the app: ")
        child.sendline(pyotp.TOTP(secret).now())
        child.expect(pexpect.EOF)
        seen += child.before
        child.close()
        return child.exitstatus if child.exitstatus is not None else -1, secret, seen

    code, secret, seen = await asyncio.to_thread(enrol)
    assert code == 0 and "otpauth://totp/the0:" in seen and "Two-factor login is on" in seen, seen
    recovery = re.findall(r"\b[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}\b", seen)
    assert len(recovery) == 10

    code, seen = await in_pty(bob.spawn("login", "--email", email), [
        ("Password: ", PASSWORD), (r"Code from your authenticator app \(or a recovery code\): ", recovery[0])])
    assert code == 0 and "Logged in as" in seen, seen
    code, seen = await in_pty(bob.spawn("2fa", "status"), [])
    assert code == 0 and "Two-factor login is on" in seen
    assert (await bob.ok("whoami")).json()["email"] == email
    assert secret not in (await bob.ok("whoami")).out


async def test_the_python_clients_log_in_in_two_steps(stack) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    email = f"{name}@example.com"
    async with AsyncThe0Client(stack.grpc_target) as client:
        await client.register(email, PASSWORD, name)
        totp = pyotp.TOTP((await client.begin_totp_enrollment(PASSWORD)).secret)
        codes = (await client.confirm_totp_enrollment(totp.now())).recovery_codes
        session = client.credentials.access_token
        answer = await client.login(email, PASSWORD)
        assert answer.HasField("second_factor") and client.credentials.access_token == session  # kept
        await client.complete_login(answer.second_factor.challenge_token, code=code_at(totp, 1))
        assert client.credentials.access_token != session and (await client.me()).two_factor_enabled

    def sync_flow() -> None:
        with The0Client(stack.grpc_target) as sync:
            answer = sync.login(email, PASSWORD)
            assert not sync.credentials.access_token
            sync.complete_login(answer.second_factor.challenge_token, recovery_code=codes[0])
            sync.disable_totp(PASSWORD, recovery_code=codes[1])
            assert not sync.me().two_factor_enabled

    await asyncio.to_thread(sync_flow)
