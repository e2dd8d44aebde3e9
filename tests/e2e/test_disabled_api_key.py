"""The API key of an admin-disabled account is refused as the account's JWT is: UNAUTHENTICATED,
TOKEN_REVOKED with ``accountDisabled`` in the ErrorInfo, not API_KEY_INVALID (which clients take to
mean the key is gone, and delete). Over gRPC and REST; on a replica that had the key cached and on
one that reads it from the database."""

from __future__ import annotations

from typing import Any

import grpc
import httpx

from tests.e2e.test_admin import ADMIN_EMAIL, ADMIN_PASSWORD, admin_of, eventually, refused, register
from tests.e2e.test_bots import rpc_error
from the0.admin.v1 import admin_service_pb2
from the0.auth.v1 import auth_service_pb2

ME = auth_service_pb2.GetCurrentUserRequest()
DISABLED = (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED", {"accountDisabled": "true"})


async def test_a_disabled_accounts_api_key_says_the_account_is_disabled(stack_factory: Any) -> None:
    common = {"admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD}
    cached_on = await stack_factory(envoy=True, **common)
    victim = await register(cached_on.channel, "victim")
    key = await victim.api_key()
    await victim.auth.GetCurrentUser(ME, metadata=key)  # cached on this replica
    admin = await admin_of(cached_on)
    await admin.admin.DisableUser(admin_service_pb2.DisableUserRequest(id=victim.id), metadata=admin.metadata)
    await eventually(lambda: refused(victim.auth.GetCurrentUser(ME, metadata=key)), 2.0)

    code, reason, metadata, _ = await rpc_error(victim.auth.GetCurrentUser(ME, metadata=key))
    assert (code, reason, metadata) == DISABLED
    code, reason, metadata, _ = await rpc_error(victim.auth.GetCurrentUser(ME, metadata=victim.metadata))
    assert (code, reason, metadata) == DISABLED  # the JWT: the same answer

    # A replica started after the disabling reads the key from the database.
    fresh = await stack_factory(**common)
    code, reason, metadata, _ = await rpc_error(victim.on(fresh.channel).auth.GetCurrentUser(ME, metadata=key))
    assert (code, reason, metadata) == DISABLED

    async with httpx.AsyncClient(base_url=cached_on.http_url, timeout=15) as http:
        reply = await http.get("/api/auth/me", headers=dict(key))
    assert reply.status_code == 401, reply.text
    [info] = [d for d in reply.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert (info["reason"], info["metadata"]) == ("TOKEN_REVOKED", {"accountDisabled": "true"})
    assert "disabled" in reply.json()["message"]

    # Enabled again, the same key works (nothing was deleted or forgotten for good).
    await admin.admin.EnableUser(admin_service_pb2.EnableUserRequest(id=victim.id), metadata=admin.metadata)
    for replica in (cached_on, fresh):
        on = victim.on(replica.channel)
        await eventually(lambda on=on: _works(on.auth.GetCurrentUser(ME, metadata=key)), 5.0)


async def _works(call: Any) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError:
        return False
    return True
