"""Scoped API keys without a server: every RPC declares its access, and the scope grammar.

The descriptor walk is the guard for new RPCs: one added without ``(the0.common.v1.access)``
fails here, so no RPC can be reached by a scoped key without saying whether it reads or writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from buf.validate import validate_pb2
from the0.api_key.v1 import api_key_pb2
from the0.common.v1 import access_pb2, auth_policy_pb2
from the0.server.app import API_SERVICES
from the0.server.identity import scopes
from the0.server.interceptors.auth import access_from_services

# Policies under which a user's credential reaches the RPC (the others are public or service-keyed).
USER_POLICIES = (
    auth_policy_pb2.AUTH_POLICY_UNSPECIFIED,
    auth_policy_pb2.AUTH_POLICY_USER_SESSION,
    auth_policy_pb2.AUTH_POLICY_ADMIN,
)


def all_methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for name in API_SERVICES for m in pool.FindServiceByName(name).methods]


def policy(method: MethodDescriptor) -> int:
    return method.GetOptions().Extensions[auth_policy_pb2.auth_policy]


def key_methods() -> list[MethodDescriptor]:
    """The RPCs an API key can call: the default policy (JWT or API key)."""
    return [m for m in all_methods() if policy(m) == auth_policy_pb2.AUTH_POLICY_UNSPECIFIED]


def test_every_rpc_that_accepts_api_keys_declares_its_access() -> None:
    methods = key_methods()
    assert len(methods) > 20  # the walk found the services
    missing = [m.full_name for m in methods if not m.GetOptions().HasExtension(access_pb2.access)]
    assert missing == [], f"add option (the0.common.v1.access) to: {missing}"
    for method in methods:
        access = scopes.Access.from_proto(method.GetOptions().Extensions[access_pb2.access])  # complete
        assert access.resource in scopes.KEY_RESOURCES, method.full_name


def test_every_rpc_a_user_can_call_declares_its_access_and_public_ones_do_not() -> None:
    for method in all_methods():
        declared = method.GetOptions().HasExtension(access_pb2.access)
        if policy(method) in USER_POLICIES:
            assert declared, f"{method.full_name}: add option (the0.common.v1.access)"
            scopes.Access.from_proto(method.GetOptions().Extensions[access_pb2.access])
        else:  # public or a platform service's: no user credential, so no scope to need
            assert not declared, f"{method.full_name} takes no user credential: drop its access option"


def test_the_scopes_keys_can_name_are_the_resources_of_key_rpcs() -> None:
    used = {scopes.Access.from_proto(m.GetOptions().Extensions[access_pb2.access]).resource for m in key_methods()}
    assert used == set(scopes.KEY_RESOURCES)


def test_the_proto_pattern_and_the_server_grammar_agree() -> None:
    field = api_key_pb2.ApiKey.DESCRIPTOR.fields_by_name["scopes"]
    rules = field.GetOptions().Extensions[validate_pb2.field].repeated
    assert rules.items.string.pattern == scopes.SCOPE.pattern
    assert rules.max_items == scopes.MAX_SCOPES
    assert rules.unique


def test_the_interceptor_reads_the_access_of_every_user_rpc() -> None:
    pool = descriptor_pool.Default()
    access = access_from_services(pool.FindServiceByName(n) for n in API_SERVICES)
    assert access["/the0.bot.v1.BotService/ListBots"] == scopes.Access("read", "bots")
    assert access["/the0.bot.v1.BotService/DeployBot"] == scopes.Access("write", "bots")
    assert access["/the0.custom_bot.v1.CustomBotService/UploadCustomBot"].scope == "custom_bots:write"
    assert access["/the0.auth.v1.AuthService/GetCurrentUser"].scope == "account:read"
    assert len(access) == len([m for m in all_methods() if policy(m) in USER_POLICIES])


BOTS_READ = scopes.Access("read", "bots")
BOTS_WRITE = scopes.Access("write", "bots")
BACKTESTS_READ = scopes.Access("read", "backtests")


@pytest.mark.parametrize(("held", "access", "allowed"), [
    (["full"], BOTS_WRITE, True),
    (["read"], BOTS_READ, True),
    (["read"], BOTS_WRITE, False),
    (["bots:read"], BOTS_READ, True),
    (["bots:read"], BOTS_WRITE, False),
    (["bots:read"], BACKTESTS_READ, False),
    (["bots:write"], BOTS_READ, True),  # writing implies reading the same resource
    (["bots:write"], BOTS_WRITE, True),
    (["bots:write"], BACKTESTS_READ, False),
    (["bots:read", "backtests:read"], BACKTESTS_READ, True),
    ([], BOTS_READ, False),
])
def test_allows(held: list[str], access: scopes.Access, allowed: bool) -> None:
    assert scopes.allows(held, access) is allowed


def test_the_grammar() -> None:
    good = ["full", "read", "bots:read", "bots:write", "custom_bots:read", "backtests:write", "account:read"]
    bad = ["", "write", "Full", "bots", "bots:delete", "api_keys:read", "users:read", " read", "bots:read "]
    assert scopes.invalid(good) == []
    assert [s for _, s in scopes.invalid(bad)] == bad


def test_no_scopes_means_full_and_the_column_round_trips() -> None:
    assert scopes.normalise([]) == ("full",)
    assert scopes.normalise(["read", "read", "bots:write"]) == ("read", "bots:write")
    assert scopes.from_column(scopes.to_column(("read", "bots:write"))) == ("read", "bots:write")
    assert scopes.from_column("") == ("full",)


def test_docs_list_the_scope_of_every_rpc_that_accepts_api_keys() -> None:
    """docs/accounts.md's table, one row per resource: reads in one column, writes in the next."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "accounts.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`") in scopes.KEY_RESOURCES:
            rows[cells[0].strip("`")] = {"read": cells[1].split(", "), "write": cells[2].split(", ")}
    for method in key_methods():
        access = scopes.Access.from_proto(method.GetOptions().Extensions[access_pb2.access])
        name = f"{method.containing_service.name}.{method.name}"
        assert name in rows.get(access.resource, {}).get(access.level, []), f"docs/accounts.md: add {name}"


def test_reads_are_gets_and_writes_are_not() -> None:
    """REST semantics: an RPC that declares it reads is a GET, and the others are not (a contract of the
    API's shape; the rate limiter prices by the access option alone, tests/unit/test_rate_limit_costs.py)."""
    for method in all_methods():
        if not method.GetOptions().HasExtension(access_pb2.access):
            continue
        access = scopes.Access.from_proto(method.GetOptions().Extensions[access_pb2.access])
        verb = method.GetOptions().Extensions[annotations_pb2.http].WhichOneof("pattern")
        if verb is not None:
            assert (verb == "get") == (access.level == "read"), method.full_name
