"""Account deletion (issue 15): AuthService.DeleteAccount over gRPC and REST, against the real stack.

A deleted account's bots are stopped the way StopBot/DeleteBot stop them (the runtime hears it), its
tokens and keys stop working, its email and username can register again, and `user.deleted` reaches the
platform.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import httpx
import orjson
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import select

from tests.e2e.test_admin import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Account,
    admin_of,
    eventually,
    login,
    refused,
    register,
)
from tests.e2e.test_bots import create, fake_runtime, rest_error, rpc_error, struct, wait_for_state
from tests.fixtures.accounts import PASSWORD
from tests.integration.test_backtests_support import add_backtestable_bot, backtest_config
from the0.admin.v1 import admin_service_pb2
from the0.auth.v1 import auth_service_pb2
from the0.backtest.v1 import backtest_pb2, backtest_service_pb2, backtest_service_pb2_grpc
from the0.bot.v1 import bot_pb2, bot_service_pb2, bot_service_pb2_grpc
from the0.server.backtests.models import BacktestRow
from the0.server.bots.models import BotRow
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.models import ApiKeyRow, SessionRow, UserRow
from the0.server.events.models import OutboxRow

ME = auth_service_pb2.GetCurrentUserRequest()
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


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


def delete(password: str) -> auth_service_pb2.DeleteAccountRequest:
    return auth_service_pb2.DeleteAccountRequest(password=password)


class BotOwner:
    """An account with an approved custom bot and the bot stubs test_bots' helpers expect."""

    def __init__(self, account: Account, channel: grpc.aio.Channel) -> None:
        self.account = account
        self.id = account.id
        self.metadata = account.metadata
        self.bots = bot_service_pb2_grpc.BotServiceStub(channel)
        self.backtests = backtest_service_pb2_grpc.BacktestServiceStub(channel)


async def test_a_wrong_password_or_an_api_key_is_refused_and_nothing_changes(stack: Any) -> None:
    user = await register(stack.channel)
    code, reason, *_ = await rpc_error(user.auth.DeleteAccount(delete("not my password at all"),
                                                               metadata=user.metadata))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    code, reason, _, fields = await rpc_error(user.auth.DeleteAccount(delete(""), metadata=user.metadata))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["password"])
    key = await user.api_key()
    code, reason, *_ = await rpc_error(user.auth.DeleteAccount(delete(PASSWORD), metadata=key))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")
    assert (await user.auth.GetCurrentUser(ME, metadata=user.metadata)).email == user.email
    await user.auth.GetCurrentUser(ME, metadata=key)


async def test_deletion_stops_the_running_bot_ends_every_credential_and_frees_the_email(
        stack: Any, sessions: Any, nats_client: Any) -> None:
    account = await register(stack.channel)
    owner = BotOwner(account, stack.channel)
    await add_backtestable_bot(sessions, owner.id)
    bot = await create(owner)
    idle = await create(owner, name="a draft")
    other_session = await login(stack.channel, account.email, PASSWORD)
    key = await account.api_key()
    backtest = await owner.backtests.CreateBacktest(backtest_service_pb2.CreateBacktestRequest(
        backtest=backtest_pb2.Backtest(name="bt", config=struct(backtest_config()))), metadata=owner.metadata)

    async with fake_runtime(nats_client, {bot.id, idle.id}) as seen:
        await owner.bots.DeployBot(bot_service_pb2.DeployBotRequest(id=bot.id), metadata=owner.metadata)
        await wait_for_state(owner, bot.id, bot_pb2.BOT_STATE_RUNNING)
        deleted = await account.auth.DeleteAccount(delete(PASSWORD), metadata=account.metadata)
        async with asyncio.timeout(15):  # the runtime hears the stop, as after StopBot
            while not any(e["type"] == "bot.stop-requested" for e in seen):
                await asyncio.sleep(0.05)
    [stop] = [e for e in seen if e["type"] == "bot.stop-requested"]
    assert stop["data"]["botId"] == bot.id and stop["data"]["reason"] == "account-deleted"
    assert (deleted.bots_stopped, deleted.bots_deleted, deleted.backtests_deleted) == (1, 2, 1)
    assert (deleted.api_keys_revoked, deleted.sessions_revoked, deleted.custom_bots_deleted) == (1, 2, 1)

    # Nothing of the account works any more: its access tokens, other sessions, refresh tokens, keys.
    assert await refused(account.auth.GetCurrentUser(ME, metadata=account.metadata))
    assert await refused(account.auth.GetCurrentUser(ME, metadata=other_session.metadata))
    assert await refused(account.auth.GetCurrentUser(ME, metadata=key))
    assert await refused(account.auth.RefreshToken(auth_service_pb2.RefreshTokenRequest(
        refresh_token=account.tokens.refresh_token)))
    code, reason, *_ = await rpc_error(account.auth.Login(auth_service_pb2.LoginRequest(
        email=account.email, password=PASSWORD)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")

    async with sessions() as db:
        row = await db.get(UserRow, account.id)
        assert row is not None and not row.active and row.deleted_at is not None
        assert account.email not in row.email and row.username != account.tokens.user.username
        assert (row.first_name, row.last_name) == ("", "")
        assert (await db.scalars(select(BotRow).where(BotRow.owner_id == account.id))).all() == []
        assert (await db.scalars(select(BacktestRow).where(BacktestRow.owner_id == account.id))).all() == []
        keys = (await db.scalars(select(ApiKeyRow).where(ApiKeyRow.user_id == account.id))).all()
        assert keys and all(k.revoked_at is not None for k in keys)
        open_sessions = (await db.scalars(select(SessionRow).where(
            SessionRow.user_id == account.id, SessionRow.revoked_at.is_(None)))).all()
        assert open_sessions == []
        [cancel] = (await db.scalars(select(OutboxRow).where(OutboxRow.type == "backtest.cancel-requested"))).all()
        assert cancel.data["backtestId"] == backtest.id  # the runtime stops a pending backtest too
        [event] = (await db.scalars(select(OutboxRow).where(OutboxRow.type == "user.deleted"))).all()
        assert event.data == {"userId": account.id}  # the platform needs no personal data to clean up

    # The platform hears it on JetStream.
    js = nats_client.jetstream()
    subscription = await js.pull_subscribe("the0.user.deleted", stream="THE0_EVENTS",
                                           config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    async with asyncio.timeout(15):
        while True:
            try:
                messages = await subscription.fetch(10, timeout=0.5)
            except TimeoutError:
                continue
            if any(orjson.loads(m.data)["data"]["userId"] == account.id for m in messages):
                break

    # The email and username are free again.
    again = await account.auth.Register(auth_service_pb2.RegisterRequest(
        email=account.email, password=PASSWORD, username=account.tokens.user.username))
    assert again.user.id != account.id and again.user.email == account.email


async def test_deletion_over_rest(stack: Any) -> None:
    user = await register(stack.channel)
    headers = {"authorization": f"Bearer {user.tokens.access_token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15) as http:
        wrong = await http.post("/api/auth/delete-account", json={"password": "not my password at all"},
                                headers=headers)
        assert rest_error(wrong) == (401, "INVALID_CREDENTIALS"), wrong.text
        reserved = await http.post("/api/auth/delete-account", json={"password": PASSWORD, "code": "123456"},
                                   headers=headers)
        assert reserved.status_code == 200, reserved.text
        assert reserved.json()["sessionsRevoked"] == 1
        async with asyncio.timeout(5):
            while (await http.get("/api/auth/me", headers=headers)).status_code != 401:
                await asyncio.sleep(0.05)


async def test_an_admin_cannot_delete_their_account_and_a_deleted_one_cannot_be_enabled(stack: Any) -> None:
    admin = await admin_of(stack)
    code, reason, *_ = await rpc_error(admin.auth.DeleteAccount(delete(ADMIN_PASSWORD), metadata=admin.metadata))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SELF_ADMINISTRATION")
    user = await register(stack.channel)
    await user.auth.DeleteAccount(delete(PASSWORD), metadata=user.metadata)
    code, *_ = await rpc_error(admin.admin.EnableUser(admin_service_pb2.EnableUserRequest(id=user.id),
                                                      metadata=admin.metadata))
    assert code == grpc.StatusCode.NOT_FOUND
    seen = await admin.admin.GetUser(admin_service_pb2.GetUserRequest(id=user.id), metadata=admin.metadata)
    assert not seen.active and seen.email.endswith(".invalid") and str(uuid.UUID(seen.id)) == user.id


async def test_a_deleted_accounts_tokens_and_keys_stop_on_every_replica_within_a_second(stack_factory: Any) -> None:
    # Only the NATS fan-out can be that quick: the database re-read is slower than the bound.
    replica_a = await stack_factory(revocation_sync_seconds=30.0)
    replica_b = await stack_factory(revocation_sync_seconds=30.0)
    for replica in (replica_a, replica_b):
        await asyncio.wait_for(replica.app.identity.revocations.listening.wait(), 10)
    user = await register(replica_a.channel)
    key = await user.api_key()
    on_b = user.on(replica_b.channel)
    await on_b.auth.GetCurrentUser(ME, metadata=key)  # the key is cached on B
    await on_b.auth.GetCurrentUser(ME, metadata=user.metadata)

    await user.auth.DeleteAccount(delete(PASSWORD), metadata=user.metadata)  # on A
    took_jwt = await eventually(lambda: refused(on_b.auth.GetCurrentUser(ME, metadata=user.metadata)), 1.0)
    took_key = await eventually(lambda: refused(on_b.auth.GetCurrentUser(ME, metadata=key)), 1.0)
    assert took_jwt < 1.0 and took_key < 1.0


async def test_with_two_factor_on_the_password_alone_deletes_nothing(stack: Any, sessions: Any) -> None:
    from tests.e2e.test_two_factor import code_at, enrolled

    user = await register(stack.channel)
    totp, _, _ = await enrolled(user)
    for missing_or_wrong in (delete(PASSWORD),
                             auth_service_pb2.DeleteAccountRequest(password=PASSWORD, code="000000")):
        code, reason, *_ = await rpc_error(user.auth.DeleteAccount(missing_or_wrong, metadata=user.metadata))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOTP_CODE_INVALID")
    assert (await user.auth.GetCurrentUser(ME, metadata=user.metadata)).email == user.email  # nothing changed
    done = await user.auth.DeleteAccount(
        auth_service_pb2.DeleteAccountRequest(password=PASSWORD, code=code_at(totp, 1)), metadata=user.metadata)
    assert done.sessions_revoked >= 1
    async with sessions() as db:
        row = (await db.execute(select(UserRow).where(UserRow.id == user.id))).scalar_one()
    assert row.deleted_at is not None and row.totp_secret is None
    admin = await admin_of(stack)
    trail = await admin.admin.ListAuditEvents(admin_service_pb2.ListAuditEventsRequest(user_id=user.id, type="account.deleted"),
                                              metadata=admin.metadata)
    assert [e.type for e in trail.audit_events] == ["account.deleted"]  # the trail outlives the account
