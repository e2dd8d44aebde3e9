"""`the0 audit list`, run as a person runs it (the installed console script) against the real stack."""

from __future__ import annotations

import pytest

from tests.e2e.test_client_cli import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Person

# The CLI is a client: one database is enough, and PostgreSQL is what production runs.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)


async def test_a_person_reads_their_audit_trail_and_an_admin_reads_everyones(stack, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    email = (await ada.ok("whoami")).json()["email"]
    wrong = await ada.run("login", "--email", email, "--password-stdin", stdin="not the password\n")
    assert wrong.code != 0
    await ada.ok("login", "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
    await ada.ok("api-keys", "create", "terminal", "--save")

    # Piped: JSON, newest first; the saved API key reads the trail too.
    mine = (await ada.ok("audit", "list")).json()
    assert [e["type"] for e in mine] == ["api-key.created", "login.succeeded", "login.failed", "login.succeeded"]
    me = (await ada.ok("whoami")).json()["id"]
    assert all(me in (e.get("actorId"), e.get("subjectUserId")) for e in mine)
    logins = (await ada.ok("audit", "list", "--type", "login.*", "--since", "1h")).json()
    assert [e["type"] for e in logins] == ["login.succeeded", "login.failed", "login.succeeded"]
    assert (await ada.ok("audit", "list", "--type", "login.failed", "--until", "1h")).json() == []
    paged = await ada.ok("audit", "list", "--page-size", "1")
    assert len(paged.json()) == 1 and "--page-token" in paged.err
    table = await ada.ok("audit", "list", "--output", "table")
    assert "TYPE" in table.out and "login.failed" in table.out

    # Across users is the admin's: refused to ada, answered to an admin's session.
    refused = await ada.run("audit", "list", "--all-users")
    assert refused.code == 4 and "[PERMISSION_DENIED]" in refused.error_line
    await ada.ok("login", "--email", ADMIN_EMAIL, "--password-stdin", "--profile", "admin",
                 stdin=ADMIN_PASSWORD + "\n")
    everyone = (await ada.ok("audit", "list", "--all-users", "--all", "--profile", "admin")).json()
    assert {me} < {e.get("subjectUserId") for e in everyone}
    adas = (await ada.ok("audit", "list", "--user", me, "--type", "login.failed", "--profile", "admin")).json()
    assert len(adas) == 1 and adas[0]["subjectUserId"] == me
    bad = await ada.run("audit", "list", "--user", "not-a-uuid", "--profile", "admin")
    assert bad.code != 0 and "user_id" in bad.error_line.replace("userId", "user_id")
