"""Scoped API keys end to end (issue 15): real server, Envoy, database, over gRPC and REST.

The scope matrix is generated from the service descriptors: every RPC that accepts API keys
is called with keys of several scopes, and the answer must be PERMISSION_DENIED
(API_KEY_SCOPE) exactly when the key's scopes do not cover the RPC's declared
``(the0.common.v1.access)``; an RPC added later is covered without touching this file.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.test_bots import rest_error, rpc_error, struct
from tests.fixtures.accounts import new_account
from tests.integration.test_bots_support import add_custom_bot, bot_config
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.backtest.v1 import backtest_service_pb2, backtest_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.client.aio import AsyncThe0Client
from the0.client.errors import PermissionDeniedError
from the0.common.v1 import access_pb2, auth_policy_pb2
from the0.server.app import API_SERVICES
from the0.server.db.engine import create_engine, session_factory

SCOPE_DENIED = (grpc.StatusCode.PERMISSION_DENIED, "API_KEY_SCOPE")
LEVELS = {access_pb2.ACCESS_LEVEL_READ: "read", access_pb2.ACCESS_LEVEL_WRITE: "write"}


# -- the RPCs and what they declare ---------------------------------------------------------------


def key_methods() -> list[tuple[str, MethodDescriptor, str, str]]:
    """``(path, descriptor, level, resource)`` of every RPC an API key can call."""
    pool = descriptor_pool.Default()
    found = []
    for name in API_SERVICES:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            options = method.GetOptions()
            if options.Extensions[auth_policy_pb2.auth_policy] != auth_policy_pb2.AUTH_POLICY_UNSPECIFIED:
                continue
            access = options.Extensions[access_pb2.access]
            resource = access_pb2.ResourceKind.Name(access.resource).removeprefix("RESOURCE_KIND_").lower()
            found.append((f"/{service.full_name}/{method.name}", method, LEVELS[access.level], resource))
    return found


def covers(scope: str, level: str, resource: str) -> bool:
    """The documented grammar (docs/accounts.md), written out independently of the server's."""
    if scope == "full":
        return True
    if scope == "read":
        return level == "read"
    kind, _, allowed = scope.partition(":")
    return kind == resource and (allowed == "write" or level == "read")


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True)


@pytest.fixture
async def sessions(database_url: str) -> Any:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


class Owner:
    """A registered user with a session, who makes keys of any scopes."""

    def __init__(self, channel: grpc.aio.Channel, user_id: str, token: str) -> None:
        self.id = user_id
        self.token = token
        self.session = (("authorization", f"Bearer {token}"),)
        self.keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
        self.bots = bot_service_pb2_grpc.BotServiceStub(channel)
        self.backtests = backtest_service_pb2_grpc.BacktestServiceStub(channel)

    async def create_key(self, *scopes: str) -> api_key_service_pb2.CreateApiKeyResponse:
        key = api_key_pb2.ApiKey(name=f"k{uuid.uuid4().hex[:8]}", scopes=list(scopes))
        return await self.keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(api_key=key),
                                            metadata=self.session)

    async def key(self, *scopes: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"ApiKey {(await self.create_key(*scopes)).secret}"),)


@pytest.fixture
async def owner(stack: Any, sessions: Any) -> Owner:
    user = Owner(stack.channel, *await new_account(stack.channel))
    await add_custom_bot(sessions, user.id)
    return user


async def reason_of(stack: Any, path: str, method: MethodDescriptor, metadata: Any) -> str:
    """The ErrorInfo reason of calling ``method`` with an empty request ("OK" if it answered)."""
    request = message_factory.GetMessageClass(method.input_type)()
    if "id" in method.input_type.fields_by_name:
        request.id = str(uuid.uuid4())
    response_class = message_factory.GetMessageClass(method.output_type)
    kinds = {(False, False): stack.channel.unary_unary, (False, True): stack.channel.unary_stream,
             (True, False): stack.channel.stream_unary, (True, True): stack.channel.stream_stream}
    call = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_class.FromString)
    argument = iter([request]) if method.client_streaming else request
    try:
        if method.server_streaming:
            stream = call(argument, metadata=metadata, timeout=10)
            try:
                async with asyncio.timeout(3):
                    await stream.read()
            except TimeoutError:  # still open: it got past the interceptor
                return "OK"
            finally:
                stream.cancel()
        else:
            await call(argument, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info.reason
        return error.code().name
    return "OK"


def rest_route(method: MethodDescriptor) -> tuple[str, str]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    assert verb is not None, method.full_name
    return verb.upper(), re.sub(r"\{[^}]+\}", str(uuid.uuid4()), getattr(rule, verb))


# -- the generated matrix -------------------------------------------------------------------------

MATRIX_SCOPES = ("full", "read", "bots:read", "bots:write", "backtests:read", "custom_bots:write", "account:read")


async def test_every_key_rpc_is_denied_exactly_when_the_scopes_do_not_cover_it(stack: Any, owner: Owner) -> None:
    methods = key_methods()
    assert len(methods) > 20
    keys = {scope: await owner.key(scope) for scope in MATRIX_SCOPES}
    wrong = []
    for path, method, level, resource in methods:
        for scope, metadata in keys.items():
            got = await reason_of(stack, path, method, metadata)
            if (got == "API_KEY_SCOPE") == covers(scope, level, resource):
                wrong.append((path, scope, got))
        # A user session is never scoped.
        assert await reason_of(stack, path, method, owner.session) != "API_KEY_SCOPE", path
    assert wrong == []


async def test_every_key_route_refuses_an_uncovering_key_with_403_through_envoy(stack: Any, owner: Owner) -> None:
    read_only, bots_only, account_only = await owner.key("read"), await owner.key("bots:read"), await owner.key(
        "account:read")
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15) as http:
        for path, method, level, resource in key_methods():
            if level == "write":
                key = read_only
            else:  # a read of a resource the key does not name
                key = account_only if resource == "bots" else bots_only
            needed = f"{resource}:{level}"
            verb, route = rest_route(method)
            response = await http.request(verb, route, headers=dict(key), content=b"{}" if verb != "GET" else None)
            assert rest_error(response) == (403, "API_KEY_SCOPE"), (path, response.text)
            [info] = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")]
            assert info["metadata"]["requiredScope"] == needed, path
            assert needed in response.json()["message"], path


# -- behaviour a user sees ------------------------------------------------------------------------


async def test_a_read_only_key_reads_bots_but_cannot_change_them(stack: Any, owner: Owner) -> None:
    bot = await owner.bots.CreateBot(bot_service_pb2.CreateBotRequest(
        bot=bot_pb2.Bot(name="watched", config=struct(bot_config()))), metadata=owner.session)
    read_key = await owner.key("read")
    listed = await owner.bots.ListBots(bot_service_pb2.ListBotsRequest(), metadata=read_key)
    assert [b.id for b in listed.bots] == [bot.id]
    assert (await owner.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=read_key)).name == "watched"
    writes = {
        "CreateBot": owner.bots.CreateBot(bot_service_pb2.CreateBotRequest(
            bot=bot_pb2.Bot(name="new", config=struct(bot_config()))), metadata=read_key),
        "UpdateBot": owner.bots.UpdateBot(bot_service_pb2.UpdateBotRequest(
            bot=bot_pb2.Bot(id=bot.id, name="renamed", config=struct(bot_config()))), metadata=read_key),
        "DeleteBot": owner.bots.DeleteBot(bot_service_pb2.DeleteBotRequest(id=bot.id), metadata=read_key),
        "DeployBot": owner.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=read_key),
        "StopBot": owner.bots.StopBot(bot_service_pb2.StopBotRequest(id=bot.id), metadata=read_key),
    }
    for name, call in writes.items():
        code, reason, metadata, _ = await rpc_error(call)
        assert (code, reason) == SCOPE_DENIED, name
        assert metadata["requiredScope"] == "bots:write" and metadata["keyScopes"] == "read", name
    headers = dict(read_key)
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        listed_rest = await http.get("/api/bots")
        assert listed_rest.status_code == 200 and [b["id"] for b in listed_rest.json()["bots"]] == [bot.id]
        assert (await http.get(f"/api/bots/{bot.id}")).status_code == 200
        for response in (
            await http.post("/api/bots", json={"name": "rest", "config": bot_config()}),
            await http.patch(f"/api/bots/{bot.id}", params={"updateMask": "name"}, json={"name": "x"}),
            await http.delete(f"/api/bots/{bot.id}"),
            await http.post(f"/api/bots/{bot.id}/deploy", json={}),
        ):
            assert rest_error(response) == (403, "API_KEY_SCOPE"), response.text
            assert "bots:write" in response.json()["message"]
    # Nothing changed.
    after = await owner.bots.GetBot(bot_service_pb2.GetBotRequest(id=bot.id), metadata=owner.session)
    assert (after.name, after.state, after.etag) == ("watched", bot.state, bot.etag)


async def test_a_bots_read_key_cannot_read_backtests(stack: Any, owner: Owner) -> None:
    key = await owner.key("bots:read")
    await owner.bots.ListBots(bot_service_pb2.ListBotsRequest(), metadata=key)
    code, reason, metadata, _ = await rpc_error(
        owner.backtests.ListBacktests(backtest_service_pb2.ListBacktestsRequest(), metadata=key))
    assert (code, reason) == SCOPE_DENIED
    assert metadata["requiredScope"] == "backtests:read"
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=dict(key)) as http:
        assert (await http.get("/api/bots")).status_code == 200
        assert rest_error(await http.get("/api/backtests")) == (403, "API_KEY_SCOPE")
    # With backtests:read as well, it can.
    both = await owner.key("bots:read", "backtests:read")
    await owner.backtests.ListBacktests(backtest_service_pb2.ListBacktestsRequest(), metadata=both)


async def test_a_key_made_without_scopes_is_full_and_does_everything(stack: Any, owner: Owner) -> None:
    created = await owner.create_key()
    assert list(created.api_key.scopes) == ["full"]
    key = (("x-api-key", created.secret),)
    bot = await owner.bots.CreateBot(bot_service_pb2.CreateBotRequest(
        bot=bot_pb2.Bot(name="full", config=struct(bot_config()))), metadata=key)
    renamed = await owner.bots.UpdateBot(bot_service_pb2.UpdateBotRequest(
        bot=bot_pb2.Bot(id=bot.id, name="renamed", config=struct(bot_config()))), metadata=key)
    assert renamed.name == "renamed"
    deployed = await owner.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=key)
    assert deployed.state != bot_pb2.BOT_STATE_DRAFT
    await owner.backtests.ListBacktests(backtest_service_pb2.ListBacktestsRequest(), metadata=key)
    await owner.bots.DeleteBot(bot_service_pb2.DeleteBotRequest(id=bot.id), metadata=key)


async def test_scopes_round_trip_over_grpc_and_rest(stack: Any, owner: Owner) -> None:
    created = await owner.create_key("bots:read", "backtests:write")
    assert list(created.api_key.scopes) == ["bots:read", "backtests:write"]
    listed = await owner.keys.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=owner.session)
    assert {k.id: list(k.scopes) for k in listed.api_keys} == {created.api_key.id: ["bots:read", "backtests:write"]}
    headers = {"authorization": f"Bearer {owner.token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        made = await http.post("/api/api-keys", json={"name": "rest key", "scopes": ["read"]})
        assert made.status_code == 200, made.text
        assert made.json()["apiKey"]["scopes"] == ["read"]
        listed_rest = (await http.get("/api/api-keys")).json()["apiKeys"]
        assert {k["name"]: k["scopes"] for k in listed_rest}["rest key"] == ["read"]
        plain = await http.post("/api/api-keys", json={"name": "plain key"})
        assert plain.json()["apiKey"]["scopes"] == ["full"]


@pytest.mark.parametrize("scopes", [["write"], ["bots:delete"], ["api_keys:read"], ["Full"], ["read", "read"],
                                    ["bots:read"] * 17, ["x" * 40]])
async def test_invalid_scopes_are_400_with_a_field_violation(stack: Any, owner: Owner, scopes: list[str]) -> None:
    code, reason, _, fields = await rpc_error(owner.create_key(*scopes))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert fields and all(f.startswith("apiKey.scopes") for f in fields), fields
    headers = {"authorization": f"Bearer {owner.token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        response = await http.post("/api/api-keys", json={"name": "bad scopes", "scopes": scopes})
        assert rest_error(response) == (400, "VALIDATION_FAILED")
        [bad] = [d for d in response.json()["details"] if d["@type"].endswith("BadRequest")]
        assert all(v["field"].startswith("apiKey.scopes") for v in bad["fieldViolations"])
    listed = await owner.keys.ListApiKeys(api_key_service_pb2.ListApiKeysRequest(), metadata=owner.session)
    assert list(listed.api_keys) == []  # nothing was made


async def test_the_async_client_makes_scoped_keys_and_reports_a_refusal(stack: Any, owner: Owner) -> None:
    target = f"127.0.0.1:{stack.app.port}"
    async with AsyncThe0Client(target, access_token=owner.token) as session_client:
        created = await session_client.create_api_key("script", scopes=["bots:read"])
    assert list(created.api_key.scopes) == ["bots:read"]
    async with AsyncThe0Client(target, api_key=created.secret) as key_client:
        await key_client.list_bots()
        with pytest.raises(PermissionDeniedError) as refused:
            await key_client.list_backtests()
    assert refused.value.reason == "API_KEY_SCOPE"
    assert refused.value.metadata["requiredScope"] == "backtests:read"
