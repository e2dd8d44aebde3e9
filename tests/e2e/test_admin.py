"""Administration end to end (issue 15): AdminService and the custom-bot review queue.

The BFLA suite (broken function-level authorisation) is generated from the service
descriptors: every RPC whose proto says ``auth_policy = AUTH_POLICY_ADMIN`` is called by
an ordinary user, over gRPC and over REST through Envoy, and must be PERMISSION_DENIED;
an RPC added later with that option is covered without touching this file.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

from tests.e2e.test_bots import rpc_error
from tests.fixtures.accounts import PASSWORD
from tests.integration.test_bots_support import add_custom_bot
from the0.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc, user_pb2
from the0.common.v1 import auth_policy_pb2
from the0.custom_bot.v1 import custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.server.app import API_SERVICES
from the0.server.db.engine import create_engine, session_factory

ADMIN_EMAIL, ADMIN_PASSWORD = "root@example.com", "admin password 123"
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


def admin_methods() -> list[tuple[str, MethodDescriptor]]:
    """``(/pkg.Service/Method, descriptor)`` of every RPC the protos mark admin-only."""
    pool = descriptor_pool.Default()
    found = []
    for name in API_SERVICES:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            if method.GetOptions().Extensions[auth_policy_pb2.auth_policy] == auth_policy_pb2.AUTH_POLICY_ADMIN:
                found.append((f"/{service.full_name}/{method.name}", method))
    return found


class Account:
    def __init__(self, channel: grpc.aio.Channel, tokens: auth_service_pb2.AuthTokens, email: str) -> None:
        self.id = tokens.user.id
        self.email = email
        self.tokens = tokens
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {tokens.access_token}"),)
        self.auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        self.keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
        self.custom_bots = custom_bot_service_pb2_grpc.CustomBotServiceStub(channel)

    def on(self, channel: grpc.aio.Channel) -> Account:
        return Account(channel, self.tokens, self.email)

    async def api_key(self) -> tuple[tuple[str, str], ...]:
        created = await self.keys.CreateApiKey(
            api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name=f"k{uuid.uuid4().hex[:8]}")),
            metadata=self.metadata)
        return (("authorization", f"ApiKey {created.secret}"),)


async def register(channel: grpc.aio.Channel, prefix: str = "u") -> Account:
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
        auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, username=name))
    return Account(channel, tokens, email)


async def login(channel: grpc.aio.Channel, email: str, password: str) -> Account:
    tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Login(
        auth_service_pb2.LoginRequest(email=email, password=password))
    return Account(channel, tokens, email)


async def admin_of(stack: Any) -> Account:
    await stack.app.identity.admin_ready.wait()
    return await login(stack.channel, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)


@pytest.fixture
async def sessions(database_url: str) -> Any:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> float:
    """Seconds until ``check`` is true; fails after ``seconds``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "not within the time allowed"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def refused(call: Awaitable[Any]) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


# -- BFLA: every admin RPC, as an ordinary user -------------------------------------------------


def test_the_admin_rpcs_are_marked_in_the_protos() -> None:
    marked = {path for path, _ in admin_methods()}
    admin_service = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]
    # Every AdminService RPC is admin-only: one added without the option fails here.
    assert {f"/the0.admin.v1.AdminService/{m.name}" for m in admin_service.methods} <= marked
    assert {"/the0.custom_bot.v1.CustomBotService/ReviewCustomBot",
            "/the0.custom_bot.v1.CustomBotService/ListCustomBotReviewQueue"} <= marked


def _request_for(method: MethodDescriptor, target_id: str) -> Any:
    request = message_factory.GetMessageClass(method.input_type)()
    if "id" in method.input_type.fields_by_name:
        request.id = target_id  # a real victim, so a missing check would change something
    return request


def _rest_route(method: MethodDescriptor, target_id: str) -> tuple[str, str]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    assert verb is not None, method.full_name
    path = re.sub(r"\{[^}]+\}", target_id, getattr(rule, verb))
    return verb.upper(), path


async def test_an_ordinary_user_is_denied_every_admin_rpc(stack: Any) -> None:
    victim = await register(stack.channel, "victim")
    mallory = await register(stack.channel, "mallory")
    mallory_key = await mallory.api_key()
    methods = admin_methods()
    assert methods
    for path, method in methods:
        response_class = message_factory.GetMessageClass(method.output_type)
        call = stack.channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=response_class.FromString)
        request = _request_for(method, victim.id)
        code, reason, *_ = await rpc_error(call(request, metadata=mallory.metadata))
        assert (code, reason) == DENIED, path
        # An API key never reaches an admin RPC, whoever owns it.
        code, reason, *_ = await rpc_error(call(request, metadata=mallory_key))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED"), path
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15) as http:
        for path, method in methods:
            verb, route = _rest_route(method, victim.id)
            response = await http.request(verb, route, headers={"authorization": f"Bearer {mallory.tokens.access_token}"},
                                          json={} if verb != "GET" else None)
            assert response.status_code == 403, (path, response.text)
            [info] = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")]
            assert info["reason"] == "PERMISSION_DENIED", path
    # Nothing happened to the victim.
    admin = await admin_of(stack)
    after = await admin.admin.GetUser(admin_service_pb2.GetUserRequest(id=victim.id), metadata=admin.metadata)
    assert (after.active, after.role, after.password_reset_required) == (True, user_pb2.ROLE_USER, False)
    assert (await victim.auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(),
                                             metadata=victim.metadata)).id == victim.id


async def test_an_admin_api_key_is_refused_and_an_admin_session_gets_through(stack: Any) -> None:
    admin = await admin_of(stack)
    admin_key = await admin.api_key()
    code, reason, *_ = await rpc_error(admin.admin.ListUsers(admin_service_pb2.ListUsersRequest(),
                                                             metadata=admin_key))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")
    page = await admin.admin.ListUsers(admin_service_pb2.ListUsersRequest(query=ADMIN_EMAIL),
                                       metadata=admin.metadata)
    assert [u.email for u in page.users] == [ADMIN_EMAIL]


# -- users ---------------------------------------------------------------------------------------


async def test_list_users_searches_filters_and_pages(stack: Any) -> None:
    admin = await admin_of(stack)
    tag = uuid.uuid4().hex[:6]
    made = [await register(stack.channel, f"s{tag}x") for _ in range(3)]
    await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=made[0].id), metadata=admin.metadata)
    seen, token = [], ""
    while True:
        page = await admin.admin.ListUsers(
            admin_service_pb2.ListUsersRequest(query=f"S{tag}", page_size=2, page_token=token),
            metadata=admin.metadata)
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert seen == [m.id for m in reversed(made)]  # newest first, any case, across pages
    disabled = await admin.admin.ListUsers(admin_service_pb2.ListUsersRequest(
        query=f"s{tag}", state=admin_service_pb2.USER_STATE_FILTER_DISABLED), metadata=admin.metadata)
    assert [u.id for u in disabled.users] == [made[0].id]
    admins = await admin.admin.ListUsers(admin_service_pb2.ListUsersRequest(role=user_pb2.ROLE_ADMIN),
                                         metadata=admin.metadata)
    assert {u.email for u in admins.users} == {ADMIN_EMAIL}
    # "%" and "_" are text, not wildcards.
    wild = await admin.admin.ListUsers(admin_service_pb2.ListUsersRequest(query="%"), metadata=admin.metadata)
    assert list(wild.users) == []
    code, reason, *_ = await rpc_error(admin.admin.ListUsers(
        admin_service_pb2.ListUsersRequest(query=f"s{tag}", page_token=token or "bogus"), metadata=admin.metadata))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    code, reason, *_ = await rpc_error(admin.admin.GetUser(
        admin_service_pb2.GetUserRequest(id=str(uuid.uuid4())), metadata=admin.metadata))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    code, reason, _, fields = await rpc_error(admin.admin.GetUser(
        admin_service_pb2.GetUserRequest(id="nope"), metadata=admin.metadata))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["id"])


async def test_a_disabled_users_tokens_and_keys_stop_on_every_replica_within_a_second(
    stack_factory: Any,
) -> None:
    common = {"admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD,
              # Only the NATS fan-out can be that quick: the database re-read is slower than the bound.
              "revocation_sync_seconds": 30.0}
    replica_a = await stack_factory(**common)
    replica_b = await stack_factory(**common)
    for replica in (replica_a, replica_b):
        await asyncio.wait_for(replica.app.identity.revocations.listening.wait(), 10)
    victim = await register(replica_a.channel, "victim")
    key = await victim.api_key()
    on_a = victim.on(replica_a.channel)
    me = auth_service_pb2.GetCurrentUserRequest()
    await on_a.auth.GetCurrentUser(me, metadata=key)  # the key is cached on A
    await on_a.auth.GetCurrentUser(me, metadata=victim.metadata)

    admin = await admin_of(replica_b)
    disabled = await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=victim.id),
                                             metadata=admin.metadata)
    assert disabled.active is False
    took_jwt = await eventually(lambda: refused(on_a.auth.GetCurrentUser(me, metadata=victim.metadata)), 1.0)
    took_key = await eventually(lambda: refused(on_a.auth.GetCurrentUser(me, metadata=key)), 1.0)
    assert took_jwt < 1.0 and took_key < 1.0
    code, reason, metadata, _ = await rpc_error(on_a.auth.GetCurrentUser(me, metadata=key))
    assert (code, reason, metadata) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED", {"accountDisabled": "true"})
    code, reason, *_ = await rpc_error(on_a.auth.Login(auth_service_pb2.LoginRequest(
        email=victim.email, password=PASSWORD)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    code, reason, *_ = await rpc_error(on_a.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(
        refresh_token=victim.tokens.refresh_token)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
    again = await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=victim.id),
                                          metadata=admin.metadata)  # idempotent
    assert again.active is False

    await admin.admin.EnableUser(admin_service_pb2.EnableUserRequest(id=victim.id), metadata=admin.metadata)
    # The key works again on A (its sessions stay ended: the user logs in anew).
    await eventually(lambda: _works(on_a.auth.GetCurrentUser(me, metadata=key)), 1.0)
    assert await refused(on_a.auth.GetCurrentUser(me, metadata=victim.metadata))
    back = await login(replica_a.channel, victim.email, PASSWORD)
    assert back.tokens.user.active is True


async def _works(call: Awaitable[Any]) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError:
        return False
    return True


async def test_an_open_stream_of_a_disabled_users_api_key_ends(stack: Any, sessions: Any) -> None:
    victim = await register(stack.channel, "victim")
    key = await victim.api_key()
    custom_bot_id = await add_custom_bot(sessions, victim.id, state="AWAITING_HUMAN_REVIEW")
    watch = victim.custom_bots.WatchCustomBot(
        custom_bot_service_pb2.WatchCustomBotRequest(id=custom_bot_id), metadata=key)
    assert (await watch.read()).custom_bot.id == custom_bot_id
    admin = await admin_of(stack)
    await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=victim.id), metadata=admin.metadata)

    async def drain() -> None:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while await watch.read() is not grpc.aio.EOF:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED

    await asyncio.wait_for(drain(), 2)


async def test_force_password_reset_ends_sessions_and_refuses_login(stack: Any) -> None:
    admin = await admin_of(stack)
    victim = await register(stack.channel, "victim")
    second = await login(stack.channel, victim.email, PASSWORD)
    key = await victim.api_key()
    answer = await admin.admin.ForcePasswordReset(admin_service_pb2.ForcePasswordResetRequest(id=victim.id),
                                                  metadata=admin.metadata)
    assert answer.sessions_revoked == 2 and answer.user.password_reset_required
    me = auth_service_pb2.GetCurrentUserRequest()
    for account in (victim, second):
        code, reason, *_ = await rpc_error(victim.auth.GetCurrentUser(me, metadata=account.metadata))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    assert (await victim.auth.GetCurrentUser(me, metadata=key)).password_reset_required  # keys keep working
    code, reason, *_ = await rpc_error(victim.auth.Login(auth_service_pb2.LoginRequest(
        email=victim.email, password=PASSWORD)))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PASSWORD_RESET_REQUIRED")
    # Only someone who knows the password learns that.
    code, reason, *_ = await rpc_error(victim.auth.Login(auth_service_pb2.LoginRequest(
        email=victim.email, password="not the password at all")))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")


async def test_an_admin_turns_two_factor_off_for_an_owner_who_lost_every_factor(stack: Any) -> None:
    from tests.e2e.test_two_factor import challenge, code_at, complete, enrolled

    admin = await admin_of(stack)
    owner = await register(stack.channel, "owner")
    totp, _, _ = await enrolled(owner)
    phone = await complete(owner, (await challenge(owner)).second_factor.challenge_token, code=code_at(totp, 1))
    key = await owner.api_key()
    answer = await admin.admin.ResetTwoFactor(admin_service_pb2.ResetTwoFactorRequest(id=owner.id),
                                              metadata=admin.metadata)
    assert answer.sessions_revoked == 2 and not answer.user.two_factor_enabled
    me = auth_service_pb2.GetCurrentUserRequest()
    for session in (owner, phone):  # every session ends at once (it may have been the thief's)
        code, reason, *_ = await rpc_error(owner.auth.GetCurrentUser(me, metadata=session.metadata))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    assert not (await owner.auth.GetCurrentUser(me, metadata=key)).two_factor_enabled  # keys keep working
    back = await challenge(owner)  # the password alone logs in again
    assert back.access_token and not back.HasField("second_factor")
    code, reason, *_ = await rpc_error(admin.admin.ResetTwoFactor(
        admin_service_pb2.ResetTwoFactorRequest(id=owner.id), metadata=admin.metadata))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TOTP_NOT_ENABLED")
    code, *_ = await rpc_error(admin.admin.ResetTwoFactor(
        admin_service_pb2.ResetTwoFactorRequest(id=str(uuid.uuid4())), metadata=admin.metadata))
    assert code == grpc.StatusCode.NOT_FOUND
    trail = await admin.admin.ListAuditEvents(admin_service_pb2.ListAuditEventsRequest(
        user_id=owner.id, type="admin.two-factor-reset"), metadata=admin.metadata)
    [event] = trail.audit_events
    assert (event.actor_id, event.subject_user_id, event.details["sessionsRevoked"]) == (admin.id, owner.id, 2)

    # The owner can turn it on again, and REST reaches the same RPC.
    totp, _, _ = await enrolled(Account(stack.channel, back, owner.email))
    headers = {"authorization": f"Bearer {admin.tokens.access_token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        reset = await http.post(f"/api/admin/users/{owner.id}/reset-two-factor", json={})
        assert reset.status_code == 200, reset.text
        assert reset.json()["user"]["twoFactorEnabled"] is False and reset.json()["sessionsRevoked"] == 1


async def test_set_user_role_applies_at_next_login_and_admins_cannot_act_on_themselves(stack: Any) -> None:
    admin = await admin_of(stack)
    helper = await register(stack.channel, "helper")
    promoted = await admin.admin.SetUserRole(admin_service_pb2.SetUserRoleRequest(
        id=helper.id, role=user_pb2.ROLE_ADMIN), metadata=admin.metadata)
    assert promoted.role == user_pb2.ROLE_ADMIN
    code, reason, *_ = await rpc_error(helper.auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(),
                                                                  metadata=helper.metadata))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    helper = await login(stack.channel, helper.email, PASSWORD)
    await helper.admin.ListUsers(admin_service_pb2.ListUsersRequest(page_size=1), metadata=helper.metadata)
    # Demoted again: the admin token it holds stops at once.
    await admin.admin.SetUserRole(admin_service_pb2.SetUserRoleRequest(id=helper.id, role=user_pb2.ROLE_USER),
                                  metadata=admin.metadata)
    code, reason, *_ = await rpc_error(helper.admin.ListUsers(admin_service_pb2.ListUsersRequest(),
                                                              metadata=helper.metadata))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")

    own = admin_service_pb2
    for call in (
        admin.admin.DisableUser(own.DisableUserRequest(id=admin.id), metadata=admin.metadata),
        admin.admin.ForcePasswordReset(own.ForcePasswordResetRequest(id=admin.id), metadata=admin.metadata),
        admin.admin.ResetTwoFactor(own.ResetTwoFactorRequest(id=admin.id), metadata=admin.metadata),
        admin.admin.SetUserRole(own.SetUserRoleRequest(id=admin.id, role=user_pb2.ROLE_USER), metadata=admin.metadata),
    ):
        code, reason, *_ = await rpc_error(call)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SELF_ADMINISTRATION")
    code, reason, _, fields = await rpc_error(admin.admin.SetUserRole(
        own.SetUserRoleRequest(id=helper.id), metadata=admin.metadata))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["role"])


# -- the review queue ----------------------------------------------------------------------------


async def test_the_review_queue_lists_every_users_versions_awaiting_review_oldest_first(
    stack: Any, sessions: Any
) -> None:
    alice, bob = await register(stack.channel, "alice"), await register(stack.channel, "bob")
    first = await add_custom_bot(sessions, alice.id, name="alpha", state="AWAITING_HUMAN_REVIEW")
    await add_custom_bot(sessions, alice.id, name="beta", state="APPROVED")
    second = await add_custom_bot(sessions, bob.id, name="gamma", state="AWAITING_HUMAN_REVIEW")
    third = await add_custom_bot(sessions, alice.id, name="alpha", version="1.1.0", state="AWAITING_HUMAN_REVIEW")
    admin = await admin_of(stack)
    # Before: an admin's own list has none of them (the "what was seen").
    own = await admin.custom_bots.ListCustomBots(custom_bot_service_pb2.ListCustomBotsRequest(),
                                                 metadata=admin.metadata)
    assert list(own.custom_bots) == []
    seen, token = [], ""
    while True:
        page = await admin.custom_bots.ListCustomBotReviewQueue(
            custom_bot_service_pb2.ListCustomBotReviewQueueRequest(page_size=2, page_token=token),
            metadata=admin.metadata)
        seen += [c.id for c in page.custom_bots]
        token = page.next_page_token
        if not token:
            break
    assert seen == [first, second, third]
    await admin.custom_bots.ReviewCustomBot(custom_bot_service_pb2.ReviewCustomBotRequest(
        id=first, decision=custom_bot_service_pb2.REVIEW_DECISION_APPROVE), metadata=admin.metadata)
    page = await admin.custom_bots.ListCustomBotReviewQueue(
        custom_bot_service_pb2.ListCustomBotReviewQueueRequest(), metadata=admin.metadata)
    assert [c.id for c in page.custom_bots] == [second, third]


# -- REST ----------------------------------------------------------------------------------------


async def test_admin_routes_through_envoy(stack: Any, sessions: Any) -> None:
    admin = await admin_of(stack)
    victim = await register(stack.channel, "victim")
    queued = await add_custom_bot(sessions, victim.id, state="AWAITING_HUMAN_REVIEW")
    headers = {"authorization": f"Bearer {admin.tokens.access_token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15, headers=headers) as http:
        listed = await http.get("/api/admin/users", params={"query": victim.email, "state": "USER_STATE_FILTER_ACTIVE"})
        assert listed.status_code == 200, listed.text
        assert [u["id"] for u in listed.json()["users"]] == [victim.id]
        got = await http.get(f"/api/admin/users/{victim.id}")
        assert got.status_code == 200 and got.json()["email"] == victim.email
        disabled = await http.post(f"/api/admin/users/{victim.id}/disable", json={})
        assert disabled.status_code == 200 and disabled.json()["active"] is False
        enabled = await http.post(f"/api/admin/users/{victim.id}/enable", json={})
        assert enabled.status_code == 200 and enabled.json()["active"] is True
        role = await http.post(f"/api/admin/users/{victim.id}/role", json={"role": "ROLE_ADMIN"})
        assert role.status_code == 200 and role.json()["role"] == "ROLE_ADMIN"
        reset = await http.post(f"/api/admin/users/{victim.id}/force-password-reset", json={})
        assert reset.status_code == 200 and reset.json()["user"]["passwordResetRequired"] is True
        assert reset.json()["sessionsRevoked"] == 0  # the role change had ended its session already
        queue = await http.get("/api/admin/custom-bots/review-queue", params={"pageSize": 10})
        assert queue.status_code == 200 and queued in [c["id"] for c in queue.json()["customBots"]]
        own = await http.post(f"/api/admin/users/{admin.id}/disable", json={})
        assert own.status_code == 400
        [info] = [d for d in own.json()["details"] if d["@type"].endswith("ErrorInfo")]
        assert info["reason"] == "SELF_ADMINISTRATION"
        missing = await http.post(f"/api/admin/users/{uuid.uuid4()}/enable", json={})
        assert missing.status_code == 404
