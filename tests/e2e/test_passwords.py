"""Passwords end to end (issue 15): ChangePassword, reset by mailed token, email verification, the policy."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import select, text, update

from tests.e2e.test_admin import ADMIN_EMAIL, ADMIN_PASSWORD, admin_of, login, refused, register
from tests.e2e.test_bots import rpc_error
from tests.fixtures.accounts import PASSWORD
from tests.fixtures.server import TEST_MAILER_KEYS, TEST_SECRETS_KEYS
from the0.admin.v1 import admin_service_pb2
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.devtools import mailbox
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.models import AccountTokenRow
from the0.server.events.models import OutboxRow
from the0.server.keys import key_ring
from the0.server.secrets.mail import MailTokens, MailTokenUnreadable

NEW_PASSWORD = "a much longer passphrase now"
ME = auth_service_pb2.GetCurrentUserRequest()


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


MAILER = MailTokens(key_ring(TEST_MAILER_KEYS, None))


async def mailed(stack: Any, sessions: Any, event_type: str, email: str) -> list[dict[str, Any]]:
    """What the mailer would get: the outbox events of ``event_type`` for ``email``, oldest first,
    each with its sealed token opened as the mailer would (``token``)."""
    await stack.app.identity.recovery.finish_pending()  # a reset is issued just after its answer
    async with sessions() as db:
        rows = (await db.scalars(select(OutboxRow).where(OutboxRow.type == event_type).order_by(OutboxRow.seq))).all()
    mails = []
    for row in rows:
        if row.data["email"] == email:
            assert "token" not in row.data, "a token in clear in the outbox"
            mails.append(row.data | {"token": MAILER.open(row.type, row.data["userId"], row.data["sealedToken"])})
    return mails


async def test_registration_follows_the_password_policy(stack: Any) -> None:
    auth = auth_service_pb2_grpc.AuthServiceStub(stack.channel)
    for password, why in (("eleven char", "at least 12"), ("password1234", "breaches"),
                          ("111111111111", "trivial")):
        name = f"u{uuid.uuid4().hex[:10]}"
        code, reason, _, fields = await rpc_error(auth.Register(auth_service_pb2.RegisterRequest(
            email=f"{name}@example.com", password=password, username=name)))
        assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["password"]), why


async def test_change_password_ends_the_other_sessions_and_says_how_many(stack: Any) -> None:
    user = await register(stack.channel)
    other = await login(stack.channel, user.email, PASSWORD)
    key = await user.api_key()
    code, reason, *_ = await rpc_error(user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password="not my password at all", new_password=NEW_PASSWORD), metadata=user.metadata))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    code, reason, _, fields = await rpc_error(user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password=PASSWORD, new_password="qwerty123456"), metadata=user.metadata))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", ["newPassword"])
    changed = await user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password=PASSWORD, new_password=NEW_PASSWORD), metadata=user.metadata)
    assert changed.sessions_revoked == 1
    await user.auth.GetCurrentUser(ME, metadata=user.metadata)  # this session stays
    assert await refused(user.auth.GetCurrentUser(ME, metadata=other.metadata))
    await user.auth.GetCurrentUser(ME, metadata=key)  # keys are not sessions
    code, reason, *_ = await rpc_error(user.auth.Login(auth_service_pb2.LoginRequest(email=user.email,
                                                                                     password=PASSWORD)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    await login(stack.channel, user.email, NEW_PASSWORD)
    code, reason, *_ = await rpc_error(user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password=NEW_PASSWORD, new_password=PASSWORD), metadata=key))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "API_KEY_NOT_ALLOWED")


async def test_password_reset_by_a_single_use_short_lived_hashed_token(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    auth = user.auth
    # The same empty answer whether the address has an account or not, and no mail for a stranger.
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    assert await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=nobody)) == \
        auth_service_pb2.RequestPasswordResetResponse()
    assert await mailed(stack, sessions, "user.password-reset-requested", nobody) == []
    await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email.upper()))
    await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    first, second = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    assert first["userId"] == user.id and first["token"] != second["token"]
    expires = datetime.fromisoformat(second["expireTime"])
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30)
    async with sessions() as db:  # stored hashed, never in clear
        hashes = set((await db.scalars(select(AccountTokenRow.token_hash).where(
            AccountTokenRow.user_id == user.id))).all())
    assert hashes == {hashlib.sha256(t.encode()).hexdigest() for t in (first["token"], second["token"])}

    # The newer request voided the older token.
    code, reason, *_ = await rpc_error(auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(
        token=first["token"], new_password=NEW_PASSWORD)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ACCOUNT_TOKEN_INVALID")
    code, reason, _, fields = await rpc_error(auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(
        token=second["token"], new_password="short")))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["newPassword"])
    await auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=second["token"], new_password=NEW_PASSWORD))
    assert await refused(auth.GetCurrentUser(ME, metadata=user.metadata))  # every session ended
    code, reason, *_ = await rpc_error(auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(
        token=second["token"], new_password="yet another passphrase")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ACCOUNT_TOKEN_INVALID")  # single use
    await login(stack.channel, user.email, NEW_PASSWORD)

    # Expired.
    await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    *_, late = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    async with sessions() as db:
        await db.execute(update(AccountTokenRow).where(
            AccountTokenRow.token_hash == hashlib.sha256(late["token"].encode()).hexdigest()
        ).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await db.commit()
    code, reason, *_ = await rpc_error(auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(
        token=late["token"], new_password="yet another passphrase")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ACCOUNT_TOKEN_INVALID")


async def test_a_reset_clears_an_admins_reset_requirement(stack: Any, sessions: Any) -> None:
    admin = await admin_of(stack)
    user = await register(stack.channel)
    await admin.admin.ForcePasswordReset(admin_service_pb2.ForcePasswordResetRequest(id=user.id),
                                         metadata=admin.metadata)
    await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    [mail] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    await user.auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=mail["token"], new_password=NEW_PASSWORD))
    back = await login(stack.channel, user.email, NEW_PASSWORD)
    assert back.tokens.user.password_reset_required is False


async def test_email_verification(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    assert (await user.auth.GetCurrentUser(ME, metadata=user.metadata)).email_verified is False
    await user.auth.RequestEmailVerification(auth_service_pb2.RequestEmailVerificationRequest(),
                                             metadata=user.metadata)
    [mail] = await mailed(stack, sessions, "user.email-verification-requested", user.email)
    verified = await user.auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(token=mail["token"]))
    assert verified.id == user.id and verified.email_verified
    code, reason, *_ = await rpc_error(user.auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(token=mail["token"])))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ACCOUNT_TOKEN_INVALID")
    # Verified already: no new token is mailed.
    await user.auth.RequestEmailVerification(auth_service_pb2.RequestEmailVerificationRequest(),
                                             metadata=user.metadata)
    assert len(await mailed(stack, sessions, "user.email-verification-requested", user.email)) == 1


async def test_reset_requests_are_throttled_per_address(stack_factory: Any) -> None:
    stack = await stack_factory(account_recovery_per_address=2)
    auth = auth_service_pb2_grpc.AuthServiceStub(stack.channel)
    for _ in range(2):
        await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email="a@example.com"))
    code, reason, *_ = await rpc_error(auth.RequestPasswordReset(
        auth_service_pb2.RequestPasswordResetRequest(email="b@example.com")))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_password_routes_through_envoy(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    headers = {"authorization": f"Bearer {user.tokens.access_token}"}
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=15) as http:
        changed = await http.post("/api/auth/password", headers=headers,
                                  json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
        assert changed.status_code == 200 and changed.json() == {"sessionsRevoked": 0}, changed.text
        asked = await http.post("/api/auth/password-reset/request", json={"email": user.email})
        assert asked.status_code == 200 and asked.json() == {}
        stranger = await http.post("/api/auth/password-reset/request", json={"email": "who@example.com"})
        assert (stranger.status_code, stranger.json()) == (200, {})
        [mail] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
        reset = await http.post("/api/auth/password-reset", json={"token": mail["token"], "newPassword": PASSWORD})
        assert reset.status_code == 200, reset.text
        again = await http.post("/api/auth/password-reset", json={"token": mail["token"], "newPassword": PASSWORD})
        assert again.status_code == 400
        [info] = [d for d in again.json()["details"] if d["@type"].endswith("ErrorInfo")]
        assert info["reason"] == "ACCOUNT_TOKEN_INVALID"
        fresh = await login(stack.channel, user.email, PASSWORD)
        verify = await http.post("/api/auth/email-verification/request", json={},
                                 headers={"authorization": f"Bearer {fresh.tokens.access_token}"})
        assert verify.status_code == 200
        [token] = [m["token"] for m in await mailed(stack, sessions, "user.email-verification-requested", user.email)]
        done = await http.post("/api/auth/email-verification", json={"token": token})
        assert done.status_code == 200 and done.json()["emailVerified"] is True


async def test_the_dev_mailbox_prints_the_tokens_a_mailer_would_send(stack: Any, sessions: Any, capsys: Any) -> None:
    user = await register(stack.channel)
    await asyncio.wait_for(stack.app.events.stream_ready.wait(), 10)
    await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    [mail] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    expected = f"password reset for {user.email}: token {mail['token']}"
    for _ in range(50):  # the relay publishes the outbox row within moments
        lines = await mailbox.read_mail(stack.app.settings.nats_url, TEST_MAILER_KEYS, idle_seconds=0.2)
        if any(line.startswith(expected) for line in lines):
            break
    else:
        raise AssertionError("the reset mail never reached the stream")
    assert expected in capsys.readouterr().out


# -- what the mailer gets, and what the asker learns -------------------------------------------------


async def test_the_token_travels_sealed_for_the_mailer_alone(stack: Any, sessions: Any, nats_client: Any) -> None:
    user, other = await register(stack.channel), await register(stack.channel)
    await asyncio.wait_for(stack.app.events.stream_ready.wait(), 10)
    await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    [mail] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    sealed, token = mail["sealedToken"], mail["token"]
    assert sealed.startswith(f"the0-mail:v1:{TEST_MAILER_KEYS[0][0]}:") and token not in sealed
    # Only the mailer's key opens it, and only in its own event for its own account.
    for ring, event_type, user_id in (
        (TEST_SECRETS_KEYS, "user.password-reset-requested", user.id),
        (TEST_MAILER_KEYS, "user.email-verification-requested", user.id),
        (TEST_MAILER_KEYS, "user.password-reset-requested", other.id),
    ):
        with pytest.raises(MailTokenUnreadable):
            MailTokens(key_ring(ring, None)).open(event_type, user_id, sealed)
    # Nor is it in clear on the stream the relay published it to.
    subscription = await nats_client.jetstream().pull_subscribe(
        "the0.user.password-reset-requested", stream="THE0_EVENTS",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    async with asyncio.timeout(15):
        while True:
            try:
                messages = await subscription.fetch(50, timeout=0.5)
            except TimeoutError:
                continue
            ours = [m for m in messages if user.id.encode() in m.data]
            if ours:
                break
    assert all(token.encode() not in m.data and sealed.encode() in m.data for m in ours)


async def test_reset_mails_to_one_address_are_limited_per_asker_and_in_all(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    stranger = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    empty = auth_service_pb2.RequestPasswordResetResponse()

    async def ask(email: str, address: str) -> auth_service_pb2.RequestPasswordResetResponse:
        # Loopback is a trusted proxy in the tests: it names the address it speaks for, as Envoy does.
        return await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=email),
                                                    metadata=(("x-forwarded-for", address),))

    async def count() -> int:
        return len(await mailed(stack, sessions, "user.password-reset-requested", user.email))

    for email in (user.email, stranger):
        for _ in range(5):  # someone at one address: every answer is the same, mailed or not
            assert await ask(email, "203.0.113.1") == empty
    assert await count() == 3
    assert await ask(user.email, "198.51.100.7") == empty  # the owner, elsewhere, still gets one
    assert await count() == 4
    for i in range(10):  # many addresses: at most THE0_RESET_MAILS_PER_EMAIL (10) in all
        assert await ask(user.email, f"203.0.113.{10 + i}") == empty
    mails = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    assert len(mails) == 10
    await user.auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=mails[-1]["token"],
                                                                        new_password=NEW_PASSWORD))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_overlapping_reset_requests_leave_only_the_newest_token(stack: Any, sessions: Any) -> None:
    # The caller no longer waits for the token to be issued, so two requests can overlap. Held at
    # their commit (the outbox table locked), both have issued a token; each must still void the
    # other's: the account row is locked while a token is issued, so the second waits for the first.
    user = await register(stack.channel)
    async with sessions() as locker:
        await locker.execute(text("LOCK TABLE event_outbox IN SHARE ROW EXCLUSIVE MODE"))
        for address in ("198.51.100.1", "198.51.100.2"):
            await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email),
                                                 metadata=(("x-forwarded-for", address),))
        await asyncio.sleep(1.0)  # both are under way: at the outbox insert, or waiting for the row
        await locker.rollback()
    mails = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    assert len(mails) == 2
    async with sessions() as db:
        usable = (await db.scalars(select(AccountTokenRow.token_hash).where(
            AccountTokenRow.user_id == user.id, AccountTokenRow.used_at.is_(None)))).all()
    assert usable == [hashlib.sha256(mails[-1]["token"].encode()).hexdigest()]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_reset_answer_does_not_wait_for_the_account_lookup(stack: Any, sessions: Any) -> None:
    # Whether the email has an account must not show in the answer's time either: the lookup
    # happens after the answer. With the users table locked, an answer that waited for the
    # lookup would wait for the lock.
    user = await register(stack.channel)
    stranger = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    async with sessions() as locker:
        await locker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        for email in (user.email, stranger):
            async with asyncio.timeout(5):
                await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=email))
        await locker.rollback()
    [mail] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    await user.auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=mail["token"], new_password=NEW_PASSWORD))
