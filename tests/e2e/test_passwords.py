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
from sqlalchemy import select, update

from tests.e2e.test_admin import ADMIN_EMAIL, ADMIN_PASSWORD, admin_of, login, refused, register
from tests.e2e.test_bots import rpc_error
from tests.fixtures.accounts import PASSWORD
from the0.admin.v1 import admin_service_pb2
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.devtools import mailbox
from the0.server.db.engine import create_engine, session_factory
from the0.server.db.models import AccountTokenRow
from the0.server.events.models import OutboxRow

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


async def mailed(sessions: Any, event_type: str, email: str) -> list[dict[str, Any]]:
    """What the mailer would get: the outbox events of ``event_type`` for ``email``, oldest first."""
    async with sessions() as db:
        rows = (await db.scalars(select(OutboxRow).where(OutboxRow.type == event_type).order_by(OutboxRow.seq))).all()
    return [r.data for r in rows if r.data["email"] == email]


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
    assert await mailed(sessions, "user.password-reset-requested", nobody) == []
    await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email.upper()))
    await auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    first, second = await mailed(sessions, "user.password-reset-requested", user.email)
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
    *_, late = await mailed(sessions, "user.password-reset-requested", user.email)
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
    [mail] = await mailed(sessions, "user.password-reset-requested", user.email)
    await user.auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=mail["token"], new_password=NEW_PASSWORD))
    back = await login(stack.channel, user.email, NEW_PASSWORD)
    assert back.tokens.user.password_reset_required is False


async def test_email_verification(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    assert (await user.auth.GetCurrentUser(ME, metadata=user.metadata)).email_verified is False
    await user.auth.RequestEmailVerification(auth_service_pb2.RequestEmailVerificationRequest(),
                                             metadata=user.metadata)
    [mail] = await mailed(sessions, "user.email-verification-requested", user.email)
    verified = await user.auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(token=mail["token"]))
    assert verified.id == user.id and verified.email_verified
    code, reason, *_ = await rpc_error(user.auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(token=mail["token"])))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ACCOUNT_TOKEN_INVALID")
    # Verified already: no new token is mailed.
    await user.auth.RequestEmailVerification(auth_service_pb2.RequestEmailVerificationRequest(),
                                             metadata=user.metadata)
    assert len(await mailed(sessions, "user.email-verification-requested", user.email)) == 1


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
        [mail] = await mailed(sessions, "user.password-reset-requested", user.email)
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
        [token] = [m["token"] for m in await mailed(sessions, "user.email-verification-requested", user.email)]
        done = await http.post("/api/auth/email-verification", json={"token": token})
        assert done.status_code == 200 and done.json()["emailVerified"] is True


async def test_the_dev_mailbox_prints_the_tokens_a_mailer_would_send(stack: Any, sessions: Any, capsys: Any) -> None:
    user = await register(stack.channel)
    await asyncio.wait_for(stack.app.events.stream_ready.wait(), 10)
    await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    [mail] = await mailed(sessions, "user.password-reset-requested", user.email)
    expected = f"password reset for {user.email}: token {mail['token']}"
    for _ in range(50):  # the relay publishes the outbox row within moments
        lines = await mailbox.read_mail(stack.app.settings.nats_url, idle_seconds=0.2)
        if any(line.startswith(expected) for line in lines):
            break
    else:
        raise AssertionError("the reset mail never reached the stream")
    assert expected in capsys.readouterr().out
