"""The audit trail end to end (issue 15): what is recorded, who sees it, paging, and that the
database itself refuses to change it. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import jwt
import pyotp
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.e2e.test_admin import ADMIN_EMAIL, ADMIN_PASSWORD, Account, admin_of, login, register
from tests.e2e.test_bot_secrets import RUNTIME_KEY, secret_config
from tests.e2e.test_bots import create, rpc_error
from tests.e2e.test_bots import register as register_bot_user
from tests.e2e.test_passwords import mailed
from tests.fixtures.accounts import PASSWORD
from tests.integration.test_bot_secrets import SECRET_SCHEMA
from tests.integration.test_bots_support import add_custom_bot
from the0.admin.v1 import admin_service_pb2
from the0.api_key.v1 import api_key_pb2, api_key_service_pb2
from the0.auth.v1 import audit_event_pb2, auth_service_pb2, user_pb2
from the0.custom_bot.v1 import custom_bot_service_pb2
from the0.platform.v1 import platform_service_pb2, platform_service_pb2_grpc
from the0.server.db.engine import create_engine, session_factory

NEW_PASSWORD = "a much longer passphrase now"
BROWSER = "audit-test-browser/1.0"
USER = audit_event_pb2.AUDIT_ACTOR_KIND_USER
ANONYMOUS = audit_event_pb2.AUDIT_ACTOR_KIND_ANONYMOUS


@pytest.fixture
async def stack(stack_factory: Any) -> Any:
    return await stack_factory(envoy=True, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD,
                               service_accounts=(("runtime", "runtime-1", RUNTIME_KEY),))


@pytest.fixture
async def sessions(database_url: str) -> Any:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def own_events(account: Account, metadata: Any = None, **filters: Any) -> list[audit_event_pb2.AuditEvent]:
    """Every page of the account's own trail, newest first (with its session, or ``metadata``)."""
    events: list[audit_event_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await account.auth.ListAuditEvents(
            auth_service_pb2.ListAuditEventsRequest(page_token=token, **filters),
            metadata=metadata or account.metadata)
        events += page.audit_events
        token = page.next_page_token
        if not token:
            return events


async def all_events(admin: Account, **filters: Any) -> list[audit_event_pb2.AuditEvent]:
    events: list[audit_event_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await admin.admin.ListAuditEvents(
            admin_service_pb2.ListAuditEventsRequest(page_token=token, **filters), metadata=admin.metadata)
        events += page.audit_events
        token = page.next_page_token
        if not token:
            return events


def of_type(events: list[audit_event_pb2.AuditEvent], kind: str) -> list[audit_event_pb2.AuditEvent]:
    return [e for e in events if e.type == kind]


async def test_each_account_event_is_recorded_with_actor_subject_and_address(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    # A failed login first, then a good one.
    await rpc_error(user.auth.Login(auth_service_pb2.LoginRequest(email=user.email, password="wrong password!")))
    second = await user.auth.Login(auth_service_pb2.LoginRequest(email=user.email, password=PASSWORD))
    created = await user.keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="audited")), metadata=user.metadata)
    await user.keys.RevokeApiKey(api_key_service_pb2.RevokeApiKeyRequest(id=created.api_key.id),
                                 metadata=user.metadata)
    second_metadata = (("authorization", f"Bearer {second.access_token}"),)
    await user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password=PASSWORD, new_password=NEW_PASSWORD), metadata=user.metadata)
    third = await user.auth.Login(auth_service_pb2.LoginRequest(email=user.email, password=NEW_PASSWORD))
    sessions_page = await user.auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=user.metadata)
    [other] = [s for s in sessions_page.sessions if not s.current]
    await user.auth.RevokeSession(auth_service_pb2.RevokeSessionRequest(id=other.id), metadata=user.metadata)
    await user.auth.RequestEmailVerification(auth_service_pb2.RequestEmailVerificationRequest(),
                                             metadata=user.metadata)
    [verification] = await mailed(stack, sessions, "user.email-verification-requested", user.email)
    await user.auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(token=verification["token"]))
    await user.auth.LogoutEverywhere(auth_service_pb2.LogoutEverywhereRequest(keep_current=True),
                                     metadata=user.metadata)
    await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    [reset] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    await user.auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=reset["token"], new_password=PASSWORD))
    assert second_metadata and third.access_token

    fresh = await login(stack.channel, user.email, PASSWORD)
    events = await own_events(fresh)
    types = [e.type for e in reversed(events)]  # oldest first
    assert types == [
        "login.succeeded",  # Register starts a session
        "login.failed", "login.succeeded", "api-key.created", "api-key.revoked", "password.changed",
        "login.succeeded", "session.revoked", "email.verification-requested", "email.verified",
        "sessions.revoked-all", "password.reset-requested", "password.reset", "login.succeeded",
    ]
    for event in events:
        assert event.subject_user_id == user.id, event
        assert event.client_address == "127.0.0.1", event
        assert event.id and event.time.seconds and event.request_id, event
    [failed] = of_type(events, "login.failed")
    assert (failed.actor_id, failed.actor_kind) == ("", ANONYMOUS)
    assert failed.details["reason"] == "INVALID_CREDENTIALS"
    anonymous = {"login.failed", "password.reset-requested", "password.reset", "email.verified"}
    for event in events:
        if event.type not in anonymous:
            assert (event.actor_id, event.actor_kind) == (user.id, USER), event
    # The user agent as sent (gRPC's own here; a browser's through Envoy: test_the_routes_through_envoy).
    assert all(e.user_agent.startswith("grpc-python") for e in events)
    key_event = of_type(events, "api-key.created")[0]
    assert key_event.details["apiKeyId"] == created.api_key.id
    assert of_type(events, "session.revoked")[0].details["sessionId"] == other.id
    assert of_type(events, "password.changed")[0].details["sessionsRevoked"] == 1


async def test_a_failed_login_of_an_unknown_email_is_recorded_for_admins(stack: Any) -> None:
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    admin = await admin_of(stack)
    code, reason, *_ = await rpc_error(admin.auth.Login(auth_service_pb2.LoginRequest(email=email,
                                                                                     password="whatever it is")))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    failed = [e for e in await all_events(admin, type="login.failed") if e.details["email"] == email]
    assert len(failed) == 1
    assert (failed[0].actor_id, failed[0].subject_user_id, failed[0].client_address) == ("", "", "127.0.0.1")


async def test_a_user_sees_only_their_own_and_an_admin_sees_all_with_filters(stack: Any) -> None:
    alice, bob = await register(stack.channel), await register(stack.channel)
    admin = await admin_of(stack)
    bobs_key = await bob.api_key()  # his sessions end below; a key keeps working
    await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=bob.id), metadata=admin.metadata)
    await admin.admin.EnableUser(admin_service_pb2.EnableUserRequest(id=bob.id), metadata=admin.metadata)
    await admin.admin.ForcePasswordReset(admin_service_pb2.ForcePasswordResetRequest(id=bob.id),
                                         metadata=admin.metadata)
    await admin.admin.SetUserRole(admin_service_pb2.SetUserRoleRequest(id=bob.id, role=user_pb2.ROLE_ADMIN),
                                  metadata=admin.metadata)

    mine = await own_events(alice)
    assert mine and all(alice.id in (e.actor_id, e.subject_user_id) for e in mine)
    # An API key lists the same (it is a read of the caller's own data).
    key = await alice.api_key()
    by_key = await alice.auth.ListAuditEvents(auth_service_pb2.ListAuditEventsRequest(), metadata=key)
    assert {e.type for e in by_key.audit_events} == {"login.succeeded", "api-key.created"}

    admin_actions = await all_events(admin, type="admin.*", user_id=bob.id)
    assert [e.type for e in reversed(admin_actions)] == [
        "admin.user-disabled", "admin.user-enabled", "admin.password-reset-forced", "admin.role-set"]
    for event in admin_actions:
        assert (event.actor_id, event.subject_user_id, event.client_address) == (admin.id, bob.id, "127.0.0.1")
    assert admin_actions[0].details["role"] == "admin"
    # Bob sees what was done to him, but not from where the admin did it.
    bobs = of_type(await own_events(bob, bobs_key), "admin.user-disabled")
    assert bobs[0].actor_id == admin.id and bobs[0].client_address == "" and bobs[0].user_agent == ""
    # The admin's list spans users; a user id narrows it; time bounds narrow it too.
    everyone = await all_events(admin)
    assert {alice.id, bob.id} <= {e.subject_user_id for e in everyone}
    assert all(bob.id in (e.actor_id, e.subject_user_id) for e in await all_events(admin, user_id=bob.id))
    assert await all_events(admin, type="admin.role-set", user_id=alice.id) == []
    newest = everyone[0].time.ToDatetime(tzinfo=UTC)
    after_newest = timestamp_pb2.Timestamp()
    after_newest.FromDatetime(newest + timedelta(seconds=1))
    assert await all_events(admin, since=after_newest) == []
    earlier = await all_events(admin, until=everyone[0].time)
    assert everyone[0].id not in {e.id for e in earlier} and len(earlier) == len(everyone) - 1

    # Bad filters are INVALID_ARGUMENT with the field named.
    for request, field in ((admin_service_pb2.ListAuditEventsRequest(type="Login!"), "type"),
                           (admin_service_pb2.ListAuditEventsRequest(user_id="not-a-uuid"), "user_id"),
                           (admin_service_pb2.ListAuditEventsRequest(page_size=-1), "page_size")):
        code, reason, _, fields = await rpc_error(admin.admin.ListAuditEvents(request, metadata=admin.metadata))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"), request
        assert any(f.replace("_", "").lower().startswith(field.replace("_", "")) for f in fields), fields
    code, reason, *_ = await rpc_error(alice.auth.ListAuditEvents(auth_service_pb2.ListAuditEventsRequest(
        since=everyone[0].time, until=everyone[-1].time), metadata=alice.metadata))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_the_routes_through_envoy(stack: Any) -> None:
    alice = await register(stack.channel)
    admin = await admin_of(stack)
    async with httpx.AsyncClient(base_url=stack.http_url) as http:
        bad = await http.post("/api/auth/login", json={"email": alice.email, "password": "not the password"},
                              headers={"user-agent": BROWSER})
        assert bad.status_code == 401
        own = await http.get("/api/auth/audit-events", params={"type": "login.*"},
                             headers={"authorization": f"Bearer {alice.tokens.access_token}"})
        assert own.status_code == 200, own.text
        body = own.json()
        assert [e["type"] for e in body["auditEvents"]] == ["login.failed", "login.succeeded"]
        failed = body["auditEvents"][0]
        assert failed["userAgent"] == BROWSER
        # The address as the login throttle and the sessions see it through Envoy.
        good = await http.post("/api/auth/login", json={"email": alice.email, "password": PASSWORD})
        listed = await http.get("/api/auth/sessions",
                                headers={"authorization": f"Bearer {good.json()['accessToken']}"})
        [current] = [x for x in listed.json()["sessions"] if x.get("current")]
        assert failed["clientAddress"] == current["clientAddress"] != ""
        assert failed["actorKind"] == "AUDIT_ACTOR_KIND_ANONYMOUS" and failed["subjectUserId"] == alice.id
        admin_view = await http.get("/api/admin/audit-events",
                                    params={"userId": alice.id, "type": "login.failed", "pageSize": 1},
                                    headers={"authorization": f"Bearer {admin.tokens.access_token}"})
        assert admin_view.status_code == 200, admin_view.text
        assert [e["id"] for e in admin_view.json()["auditEvents"]] == [failed["id"]]
        denied = await http.get("/api/admin/audit-events",
                                headers={"authorization": f"Bearer {alice.tokens.access_token}"})
        assert denied.status_code == 403


async def test_paging_is_stable_while_events_are_added(stack: Any) -> None:
    user = await register(stack.channel)
    for n in range(6):
        await user.keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
            api_key=api_key_pb2.ApiKey(name=f"key-{n}")), metadata=user.metadata)
    first = await user.auth.ListAuditEvents(auth_service_pb2.ListAuditEventsRequest(page_size=3),
                                            metadata=user.metadata)
    assert len(first.audit_events) == 3 and first.next_page_token
    # New events land before the first page; the pages after it are not shifted.
    await user.keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="late")), metadata=user.metadata)
    token, seen = first.next_page_token, list(first.audit_events)
    while token:
        page = await user.auth.ListAuditEvents(auth_service_pb2.ListAuditEventsRequest(
            page_size=3, page_token=token), metadata=user.metadata)
        seen += page.audit_events
        token = page.next_page_token
    assert len(seen) == 7 and len({e.id for e in seen}) == 7  # 6 keys + the registration's login
    stamps = [(e.time.ToDatetime(), e.id) for e in seen]
    assert stamps == sorted(stamps, reverse=True)
    # A token of one filter is refused by another.
    code, reason, *_ = await rpc_error(user.auth.ListAuditEvents(auth_service_pb2.ListAuditEventsRequest(
        page_size=3, page_token=first.next_page_token, type="login.*"), metadata=user.metadata))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_the_database_refuses_to_change_the_trail(stack: Any, sessions: Any, database_url: str) -> None:
    await register(stack.channel)
    for statement in ("UPDATE audit_events SET type = 'forged'", "DELETE FROM audit_events"):
        async with sessions() as db:
            with pytest.raises(DBAPIError, match="append-only"):
                await db.execute(text(statement))
    async with sessions() as db:
        assert await db.scalar(text("SELECT count(*) FROM audit_events WHERE type = 'forged'")) == 0
        assert await db.scalar(text("SELECT count(*) FROM audit_events")) >= 1
    if database_url.startswith("postgresql"):
        async with sessions() as db:
            with pytest.raises(DBAPIError, match="append-only"):
                await db.execute(text("TRUNCATE audit_events"))
        # The documented pruning path: a DELETE in a transaction that says so.
        async with sessions() as db:
            await db.execute(text("SET LOCAL the0.audit_prune = 'on'"))
            await db.execute(text("DELETE FROM audit_events WHERE time < :t"),
                             {"t": datetime.now(UTC) - timedelta(days=365)})
            await db.commit()


async def test_review_and_platform_secret_fetches_are_recorded(stack: Any, sessions: Any) -> None:
    admin = await admin_of(stack)
    owner = await register_bot_user(stack.channel)
    queued = await add_custom_bot(sessions, owner.id, name="queued", state="AWAITING_HUMAN_REVIEW")
    await admin.custom_bots.ReviewCustomBot(custom_bot_service_pb2.ReviewCustomBotRequest(
        id=queued, decision=custom_bot_service_pb2.REVIEW_DECISION_APPROVE), metadata=admin.metadata)
    await add_custom_bot(sessions, owner.id, schema=SECRET_SCHEMA)
    bot = await create(owner, config=secret_config())
    platform = platform_service_pb2_grpc.PlatformServiceStub(stack.channel)
    await platform.GetBotDeployment(platform_service_pb2.GetBotDeploymentRequest(id=bot.id),
                                    metadata=(("x-service-key", RUNTIME_KEY),))

    [reviewed] = await all_events(admin, type="custom-bot.reviewed")
    assert (reviewed.actor_id, reviewed.subject_user_id) == (admin.id, owner.id)
    assert reviewed.details["customBotId"] == queued and reviewed.details["decision"] == "approve"
    [fetched] = await all_events(admin, type="platform.secret-fetched")
    assert fetched.actor_kind == audit_event_pb2.AUDIT_ACTOR_KIND_SERVICE_ACCOUNT and fetched.actor_id
    assert fetched.subject_user_id == owner.id and fetched.details["botId"] == bot.id


async def test_no_secret_or_token_appears_in_any_event(stack: Any, sessions: Any) -> None:
    user = await register(stack.channel)
    created = await user.keys.CreateApiKey(api_key_service_pb2.CreateApiKeyRequest(
        api_key=api_key_pb2.ApiKey(name="secretive")), metadata=user.metadata)
    await user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password=PASSWORD, new_password=NEW_PASSWORD), metadata=user.metadata)
    await rpc_error(user.auth.Login(auth_service_pb2.LoginRequest(email=user.email, password="guessed password")))
    await user.auth.RequestPasswordReset(auth_service_pb2.RequestPasswordResetRequest(email=user.email))
    [reset] = await mailed(stack, sessions, "user.password-reset-requested", user.email)
    await user.auth.ResetPassword(auth_service_pb2.ResetPasswordRequest(token=reset["token"], new_password=PASSWORD))
    again = await login(stack.channel, user.email, PASSWORD)
    async with sessions() as db:
        stored = json.dumps([list(map(str, row)) for row in (await db.execute(text(
            "SELECT * FROM audit_events"))).all()])
    for secret in (PASSWORD, NEW_PASSWORD, "guessed password", created.secret, reset["token"],
                   again.tokens.access_token, again.tokens.refresh_token, user.tokens.refresh_token):
        assert secret not in stored


async def test_a_reused_refresh_token_ending_its_session_is_recorded(stack: Any) -> None:
    user = await register(stack.channel)
    admin = await admin_of(stack)
    request = auth_service_pb2.RefreshTokenRequest(refresh_token=user.tokens.refresh_token)
    await user.auth.RefreshToken(request)
    code, reason, *_ = await rpc_error(user.auth.RefreshToken(request))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    [revoked] = await all_events(admin, type="session.revoked", user_id=user.id)
    assert (revoked.actor_kind, revoked.subject_user_id) == (ANONYMOUS, user.id)
    assert revoked.details["reason"] == "REFRESH_TOKEN_REUSED"
    claims = jwt.decode(user.tokens.access_token, options={"verify_signature": False})
    assert revoked.details["sessionId"] == claims["sid"]


async def test_a_signed_in_callers_wrong_password_or_code_is_recorded(stack: Any) -> None:
    # Someone holding a stolen session and guessing the password or a code shows in the trail.
    from tests.e2e.test_two_factor import code_at

    user = await register(stack.channel)

    def wrong_code(totp: Any) -> str:
        near = {code_at(totp, step) for step in (-1, 0, 1)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)

    wrong = "not the password at all"
    await rpc_error(user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password=wrong, new_password=NEW_PASSWORD), metadata=user.metadata))
    await rpc_error(user.auth.BeginTotpEnrollment(auth_service_pb2.BeginTotpEnrollmentRequest(password=wrong),
                                                  metadata=user.metadata))
    enrollment = await user.auth.BeginTotpEnrollment(auth_service_pb2.BeginTotpEnrollmentRequest(password=PASSWORD),
                                                     metadata=user.metadata)
    totp = pyotp.TOTP(enrollment.secret)
    await rpc_error(user.auth.ConfirmTotpEnrollment(auth_service_pb2.ConfirmTotpEnrollmentRequest(
        code=wrong_code(totp)), metadata=user.metadata))
    await user.auth.ConfirmTotpEnrollment(auth_service_pb2.ConfirmTotpEnrollmentRequest(code=totp.now()),
                                          metadata=user.metadata)
    await rpc_error(user.auth.DisableTotp(auth_service_pb2.DisableTotpRequest(
        password=PASSWORD, code=wrong_code(totp)), metadata=user.metadata))
    await rpc_error(user.auth.DeleteAccount(auth_service_pb2.DeleteAccountRequest(
        password=wrong, code=code_at(totp, 1)), metadata=user.metadata))
    # A malformed request is a client mistake, not a guess: nothing recorded.
    await rpc_error(user.auth.ChangePassword(auth_service_pb2.ChangePasswordRequest(
        current_password="", new_password=NEW_PASSWORD), metadata=user.metadata))

    refused = await own_events(user, type="reauthentication.failed")
    assert [(e.details["operation"], e.details["reason"]) for e in reversed(refused)] == [
        ("change-password", "INVALID_CREDENTIALS"),
        ("begin-totp-enrollment", "INVALID_CREDENTIALS"),
        ("confirm-totp-enrollment", "TOTP_CODE_INVALID"),
        ("disable-totp", "TOTP_CODE_INVALID"),
        ("delete-account", "INVALID_CREDENTIALS"),
    ]
    for event in refused:
        assert (event.actor_id, event.subject_user_id, event.details["credential"]) == (user.id, user.id, "session")
    # Nothing else changed: the account is whole and two-factor login stays on.
    assert (await user.auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(),
                                           metadata=user.metadata)).two_factor_enabled
