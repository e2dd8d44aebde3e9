"""rotate-secrets reseals two-factor TOTP secrets too: once it has run, the old key of
THE0_SECRETS_KEY can go and a user with two-factor login still logs in (issue fix 1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tests.e2e.test_admin import register
from tests.e2e.test_two_factor import challenge, code_at, complete, enrolled, sessions  # noqa: F401
from tests.fixtures.accounts import PASSWORD
from tests.fixtures.server import TEST_SECRETS_KEYS
from the0.auth.v1 import auth_service_pb2
from the0.server.db.models import UserRow
from the0.server.identity.totp_rotation import rotate_totp_secrets
from the0.server.keys import KeyRing
from the0.server.secrets.box import ConfigSecrets

NEW = ("test2", "a-brand-new-secrets-key-of-32-bytes-or-more")
ME = auth_service_pb2.GetCurrentUserRequest()


def ring(*keys: tuple[str, str]) -> ConfigSecrets:
    return ConfigSecrets(KeyRing(keys[0][0], tuple((kid, secret.encode()) for kid, secret in keys)))


async def stored_secret(sessions: Any, user_id: str) -> str:  # noqa: F811
    async with sessions() as db:
        return str((await db.execute(select(UserRow.totp_secret).where(UserRow.id == user_id))).scalar_one())


async def test_after_rotation_the_old_key_can_go_and_two_factor_login_still_works(
    stack_factory: Any, sessions: Any  # noqa: F811
) -> None:
    before = await stack_factory()
    user = await register(before.channel)
    totp, _, _ = await enrolled(user)
    pending = await register(before.channel)  # enrolment begun, never confirmed: resealed too
    await pending.auth.BeginTotpEnrollment(auth_service_pb2.BeginTotpEnrollmentRequest(password=PASSWORD), metadata=pending.metadata)
    assert (await stored_secret(sessions, user.id)).startswith(f"the0-secret:v1:{TEST_SECRETS_KEYS[0][0]}:")

    both = ring(NEW, TEST_SECRETS_KEYS[0])
    report = await rotate_totp_secrets(sessions, both)
    assert report.unreadable == () and report.secrets_resealed >= 2
    assert (await stored_secret(sessions, user.id)).startswith(f"the0-secret:v1:{NEW[0]}:")
    # Idempotent: a second run finds nothing left under the old key.
    again = await rotate_totp_secrets(sessions, both)
    assert (again.secrets_resealed, again.unreadable) == (0, ())

    retired = await stack_factory(secrets_keys=(NEW,))
    user = user.on(retired.channel)
    answer = await challenge(user)
    assert answer.second_factor.challenge_token and not answer.access_token
    session = await complete(user, answer.second_factor.challenge_token, code=code_at(totp, 1))
    assert (await session.auth.GetCurrentUser(ME, metadata=session.metadata)).two_factor_enabled


async def test_a_secret_no_key_opens_is_named_not_opened(stack_factory: Any, sessions: Any) -> None:  # noqa: F811
    stack = await stack_factory()
    user = await register(stack.channel)
    await enrolled(user)
    report = await rotate_totp_secrets(sessions, ring(NEW))
    assert user.id in report.unreadable
    assert (await stored_secret(sessions, user.id)).startswith(f"the0-secret:v1:{TEST_SECRETS_KEYS[0][0]}:")

