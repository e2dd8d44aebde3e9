"""The `the0` binary's account commands (issue 15) against the real stack: passwords, email verification,
sessions, and administration — as a person runs them, piped (JSON) and, for the hidden prompts, in a pty.

The people, the stack and the helpers are test_client_cli's.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_client_cli import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    Person,
    bot_folder,
    in_pty,
    stack,
)
from tests.fixtures.server import TEST_MAILER_KEYS
from the0.devtools import mailbox
from the0.devtools.publish_event import publish

__all__ = ["stack"]  # the fixture, shared
NEW_PASSWORD = "a much longer passphrase now"
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


async def mailed_token(nats_url: str, what: str, email: str) -> str:
    """The newest token the mailer would send to ``email``, read with the dev mailbox as a developer would."""
    prefix = f"{what} for {email}: token "
    async with asyncio.timeout(30):
        while True:  # the outbox relay publishes within moments
            lines = [line for line in await mailbox.read_mail(nats_url, TEST_MAILER_KEYS, idle_seconds=0.2) if line.startswith(prefix)]
            if lines:
                return lines[-1][len(prefix):].split()[0]


async def signed_up(home: Path, url: str) -> tuple[Person, str]:
    person = Person(home, url=url)
    name = f"u{uuid.uuid4().hex[:10]}"
    email = f"{name}@example.com"
    await person.ok("register", "--email", email, "--username", name, "--password-stdin", stdin=PASSWORD + "\n")
    return person, email


async def logged_in(home: Path, url: str, email: str, password: str = PASSWORD) -> Person:
    person = Person(home, url=url)
    await person.ok("login", "--email", email, "--password-stdin", stdin=password + "\n")
    return person


async def test_password_change_ends_the_other_sessions_and_a_mailed_token_resets_it(stack, nats_server, tmp_path):
    ada, email = await signed_up(tmp_path / "ada", stack.grpc_target)
    laptop = await logged_in(tmp_path / "laptop", stack.grpc_target, email)

    # Never a plain argument: there is no such argument.
    assert (await ada.run("password", "change", NEW_PASSWORD)).code == 2
    wrong = await ada.run("password", "change", "--password-stdin", stdin=f"not my password\n{NEW_PASSWORD}\n")
    assert wrong.code == 3 and "[INVALID_CREDENTIALS]" in wrong.error_line
    weak = await ada.run("password", "change", "--password-stdin", stdin=f"{PASSWORD}\nqwerty123456\n")
    assert weak.code == 7 and "[VALIDATION_FAILED]" in weak.error_line

    changed = await ada.ok("password", "change", "--password-stdin", stdin=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert changed.json() == {"sessionsRevoked": 1}
    assert (await ada.ok("whoami")).json()["email"] == email  # this session stays
    ended = await laptop.run("whoami")
    assert ended.code == 3 and "the0 login" in ended.error_line

    # Forgotten: a token by mail (read with the dev mailbox), then a new password; every session ends.
    assert (await laptop.ok("password", "reset-request", email)).json() == {}
    token = await mailed_token(nats_server.url, "password reset", email)
    again = "yet another long passphrase"
    await laptop.ok("password", "reset", "--token", token, "--password-stdin", stdin=again + "\n")
    assert (await ada.run("whoami")).code == 3
    reused = await laptop.run("password", "reset", "--token", token, "--password-stdin", stdin=again + "\n")
    assert reused.code == 7 and "[ACCOUNT_TOKEN_INVALID]" in reused.error_line
    await logged_in(tmp_path / "ada-again", stack.grpc_target, email, again)


async def test_at_a_terminal_passwords_are_asked_for_hidden_and_twice(stack, tmp_path):
    ada, _ = await signed_up(tmp_path / "ada", stack.grpc_target)
    code, output = await in_pty(ada.spawn("password", "change"), [
        ("Current password: ", PASSWORD), ("New password: ", NEW_PASSWORD),
        ("Repeat for confirmation: ", NEW_PASSWORD)])
    assert code == 0 and "1 other session" not in output and "Password changed" in output
    assert PASSWORD not in output and NEW_PASSWORD not in output  # never echoed


async def test_email_is_verified_with_the_mailed_token(stack, nats_server, tmp_path):
    ada, email = await signed_up(tmp_path / "ada", stack.grpc_target)
    assert (await ada.ok("email", "verify-request")).json() == {}
    token = await mailed_token(nats_server.url, "verify email", email)
    verified = (await ada.ok("email", "verify", token)).json()
    assert verified["email"] == email and verified["emailVerified"] is True
    bad = await ada.run("email", "verify", "not-a-token")
    assert bad.code == 7 and "[ACCOUNT_TOKEN_INVALID]" in bad.error_line


async def test_sessions_are_listed_revoked_and_ended_everywhere(stack, tmp_path):
    ada, email = await signed_up(tmp_path / "ada", stack.grpc_target)
    laptop = await logged_in(tmp_path / "laptop", stack.grpc_target, email)
    listed = (await ada.ok("sessions", "list")).json()
    assert len(listed) == 2 and [s.get("current", False) for s in listed].count(True) == 1
    [other] = [s for s in listed if not s.get("current")]
    assert (await ada.ok("sessions", "list", "--page-size", "1", "--all")).json() == listed
    assert "--page-token" in (await ada.ok("sessions", "list", "--page-size", "1")).err

    unconfirmed = await ada.run("sessions", "revoke", other["id"])
    assert unconfirmed.code == 10 and "--yes" in unconfirmed.error_line
    await laptop.ok("whoami")
    await ada.ok("sessions", "revoke", other["id"], "--yes")
    assert (await laptop.run("whoami")).code == 3
    missing = await ada.run("sessions", "revoke", str(uuid.uuid4()), "--yes")
    assert missing.code in (0, 5), missing  # idempotent, or not found: never a crash
    assert (await ada.run("sessions", "revoke", "not-an-id", "--yes")).code == 7

    phone = await logged_in(tmp_path / "phone", stack.grpc_target, email)
    kept = await ada.ok("sessions", "logout-everywhere", "--keep-current", "--yes")
    assert kept.json() == {"sessionsRevoked": 1}
    assert (await phone.run("whoami")).code == 3
    await ada.ok("whoami")
    everywhere = await ada.ok("sessions", "logout-everywhere", "--yes")
    assert everywhere.json() == {"sessionsRevoked": 1}
    assert "accessToken" not in ada.saved() and "refreshToken" not in ada.saved()
    gone = await ada.run("whoami")
    assert gone.code == 3 and "the0 login" in gone.error_line


async def test_admins_run_accounts_and_the_review_queue_and_users_are_refused(stack, nats_server, tmp_path):
    ada, email = await signed_up(tmp_path / "ada", stack.grpc_target)
    uploaded = (await ada.ok("custom-bots", "upload", str(bot_folder(tmp_path)))).json()
    await publish(nats_server.url, "custom-bot.awaiting-human-review",
                  {"customBotId": uploaded["id"], "reasons": ["network access"]})

    # An ordinary user: exit 4 and one line, for every admin command.
    for command in (["admin", "users", "list"], ["admin", "users", "get", str(uuid.uuid4())],
                    ["admin", "users", "disable", str(uuid.uuid4()), "--yes"], ["admin", "review-queue"]):
        refused = await ada.run(*command)
        assert refused.code == 4 and "[PERMISSION_DENIED]" in refused.error_line, command

    admin = await logged_in(tmp_path / "admin", stack.grpc_target, ADMIN_EMAIL, ADMIN_PASSWORD)
    [found] = (await admin.ok("admin", "users", "list", "--query", email.upper())).json()
    assert found["email"] == email and found["active"] is True
    assert (await admin.ok("admin", "users", "list", "--query", email, "--output", "id")).out.split() == [found["id"]]
    assert (await admin.ok("admin", "users", "list", "--query", email, "--state", "disabled")).json() == []
    assert (await admin.ok("admin", "users", "get", found["id"])).json()["id"] == found["id"]
    assert (await admin.run("admin", "users", "get", str(uuid.uuid4()))).code == 5

    async with asyncio.timeout(10):
        while uploaded["id"] not in [v["id"] for v in (await admin.ok("admin", "review-queue", "--all")).json()]:
            await asyncio.sleep(0.1)

    assert (await admin.run("admin", "users", "disable", found["id"])).code == 10
    disabled = (await admin.ok("admin", "users", "disable", found["id"], "--yes")).json()
    assert "active" not in disabled or disabled["active"] is False
    assert (await ada.run("whoami")).code == 3
    assert (await admin.ok("admin", "users", "enable", found["id"])).json()["active"] is True
    ada = await logged_in(tmp_path / "ada-2", stack.grpc_target, email)

    forced = (await admin.ok("admin", "users", "force-reset", found["id"], "--yes")).json()
    assert forced["user"]["passwordResetRequired"] is True and forced["sessionsRevoked"] == 1
    must_reset = await Person(tmp_path / "ada-3", url=stack.grpc_target).run(
        "login", "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert must_reset.code != 0 and "[PASSWORD_RESET_REQUIRED]" in must_reset.error_line
    assert "password reset-request" in must_reset.error_line
    not_on = await admin.run("admin", "users", "reset-2fa", found["id"], "--yes")  # she never turned it on
    assert not_on.code == 6 and "[TOTP_NOT_ENABLED]" in not_on.error_line

    promoted = (await admin.ok("admin", "users", "set-role", found["id"], "admin", "--yes")).json()
    assert promoted["role"] == "ROLE_ADMIN"
    bad_role = await admin.run("admin", "users", "set-role", found["id"], "owner", "--yes")
    assert bad_role.code == 2

    me = (await admin.ok("whoami")).json()
    self_disable = await admin.run("admin", "users", "disable", me["id"], "--yes")
    assert self_disable.code == 6 and "[SELF_ADMINISTRATION]" in self_disable.error_line


async def test_the_asyncio_client_has_the_account_methods(stack: Any) -> None:
    from the0.client.aio import AsyncThe0Client

    name = f"u{uuid.uuid4().hex[:10]}"
    async with AsyncThe0Client(stack.grpc_target) as client:
        await client.register(f"{name}@example.com", PASSWORD, name)
        sessions = [s async for s in client.iter_sessions()]
        assert [s.current for s in sessions] == [True]
        changed = await client.change_password(PASSWORD, NEW_PASSWORD)
        assert changed.sessions_revoked == 0
        ended = await client.logout_everywhere()
        assert ended.sessions_revoked == 1 and client.credentials.access_token is None


async def test_account_delete_asks_for_the_email_then_the_password_and_frees_the_address(stack, tmp_path):
    ada, email = await signed_up(tmp_path / "ada", stack.grpc_target)
    await ada.ok("api-keys", "create", "laptop", "--save")
    unconfirmed = await ada.run("account", "delete", "--password-stdin", stdin=PASSWORD + "\n")
    assert unconfirmed.code == 10 and "--yes" in unconfirmed.error_line
    wrong = await ada.run("account", "delete", "--yes", "--password-stdin", stdin="not my password\n")
    assert wrong.code == 3 and "[INVALID_CREDENTIALS]" in wrong.error_line

    # At a terminal: the email must be typed; a wrong one changes nothing.
    code, _ = await in_pty(ada.spawn("account", "delete"), [("Type the email to confirm: ", "someone@else.com")])
    assert code == 10
    code, output = await in_pty(ada.spawn("account", "delete"), [
        ("Type the email to confirm: ", email), ("Password: ", PASSWORD)])
    assert code == 0 and f"Deleted account {email}" in output and PASSWORD not in output
    assert not {"accessToken", "refreshToken", "apiKey", "apiKeyId"} & set(ada.saved())
    gone = await ada.run("whoami")
    assert gone.code == 3 and "the0 login" in gone.error_line

    again = Person(tmp_path / "ada-again", url=stack.grpc_target)
    await again.ok("register", "--email", email, "--username", f"u{uuid.uuid4().hex[:10]}", "--password-stdin",
                   stdin=PASSWORD + "\n")
    done = (await again.ok("account", "delete", "--yes", "--password-stdin", stdin=PASSWORD + "\n")).json()
    assert done["sessionsRevoked"] == 1
