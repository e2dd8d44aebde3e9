"""`the0 api-keys create --scope`: a read-only key made with the CLI reads but cannot write (issue 15)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_client_cli import Person

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory()


async def test_a_read_only_key_from_the_cli_lists_but_cannot_create(stack, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    created = (await ada.ok("api-keys", "create", "dashboard", "--scope", "read", "--scope", "bots:write")).json()
    assert created["apiKey"]["scopes"] == ["read", "bots:write"]
    plain = (await ada.ok("api-keys", "create", "everything")).json()
    assert plain["apiKey"]["scopes"] == ["full"]
    table = (await ada.ok("api-keys", "list", "--output", "table")).out
    assert "SCOPES" in table and "read,bots:write" in table and "full" in table

    reader = (await ada.ok("api-keys", "create", "reader", "--scope", "read")).json()
    ada.env["THE0_API_KEY"] = reader["secret"]
    assert (await ada.ok("bots", "list")).json() == []
    config = json.dumps({"type": "scheduled/x", "version": "1.0.0"})
    refused = await ada.run("bots", "create", "nope", "--config", config)
    assert refused.code == 4 and "[API_KEY_SCOPE]" in refused.error_line and "bots:write" in refused.error_line
    del ada.env["THE0_API_KEY"]

    bad = await ada.run("api-keys", "create", "bad", "--scope", "write")
    assert bad.code == 7 and "apiKey.scopes" in bad.error_line
