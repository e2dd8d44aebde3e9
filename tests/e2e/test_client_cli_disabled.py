"""The `the0` binary with a saved API key of an account an admin disabled: one line saying so, and the
key stays in the profile (it works again once the account is enabled); never "revoked", never deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests.e2e.test_admin import ADMIN_EMAIL, ADMIN_PASSWORD, admin_of, eventually
from tests.e2e.test_client_cli import Person
from the0.admin.v1 import admin_service_pb2
from the0.client import The0Client
from the0.client.errors import The0Error

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


async def test_a_disabled_accounts_saved_key_is_kept_and_the_cli_says_why(stack_factory: Any, tmp_path: Any) -> None:
    stack = await stack_factory(admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    key = (await ada.ok("api-keys", "create", "laptop", "--save")).json()
    me = (await ada.ok("whoami")).json()
    admin = await admin_of(stack)
    await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=me["id"]), metadata=admin.metadata)

    probe = The0Client(stack.grpc_target, api_key=key["secret"])

    async def refused() -> bool:
        try:
            await asyncio.to_thread(probe.me)
        except The0Error as error:
            return error.code is grpc.StatusCode.UNAUTHENTICATED
        return False

    try:
        await eventually(refused, 2.0)
    finally:
        probe.close()

    run = await ada.run("whoami")
    assert run.code != 0
    line = run.error_line  # exactly one line, no traceback
    assert "disabled" in line and "admin" in line and "revoked" not in line, line
    assert "the0 login" not in line, line  # logging in again cannot help
    assert ada.saved()["apiKey"] == key["secret"]  # kept

    await admin.admin.EnableUser(admin_service_pb2.EnableUserRequest(id=me["id"]), metadata=admin.metadata)
    back = await ada.ok("whoami")  # the same saved key (the session ended when the account was disabled)
    assert back.json()["id"] == me["id"] and ada.saved()["apiKey"] == key["secret"]
