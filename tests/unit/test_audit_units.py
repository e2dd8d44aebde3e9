"""The audit trail's own rules: no credential-looking details, actors named from the caller, type filters."""

from __future__ import annotations

from typing import Any

import pytest

from the0.server.audit.service import type_filter
from the0.server.audit.trail import Actor, AuditTrail
from the0.server.identity.principal import Principal
from the0.server.request_context import CallOrigin, call_origin_var, request_id_var


class Staging:
    """Stands in for an AsyncSession: record only adds a row."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, row: Any) -> None:
        self.added.append(row)


@pytest.mark.parametrize("key", ["password", "newPassword", "secret", "token", "refreshToken", "keyHash", "code"])
def test_a_detail_that_looks_like_a_credential_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="credential"):
        AuditTrail(()).record(Staging(), "x.y", actor=None, subject_user_id=None, details={key: "v"})


def test_a_record_names_the_caller_the_address_and_the_request() -> None:
    staging = Staging()
    origin = call_origin_var.set(CallOrigin("ipv4:192.0.2.7:5555", (("user-agent", "curl/8"),)))
    request = request_id_var.set("req-1")
    try:
        AuditTrail(()).record(staging, "api-key.created",
                              actor=Actor.of(Principal(user_id="u1", role="user", auth_kind="api_key")),
                              subject_user_id="u1", details={"apiKeyId": "k1", "name": "x" * 300})
    finally:
        call_origin_var.reset(origin)
        request_id_var.reset(request)
    [row] = staging.added
    assert (row.actor_id, row.actor_kind, row.subject_user_id) == ("u1", "user", "u1")
    assert (row.client_address, row.user_agent, row.request_id) == ("192.0.2.7", "curl/8", "req-1")
    assert row.details == {"apiKeyId": "k1", "name": "x" * 256, "credential": "api_key"}


def test_a_service_account_is_named_as_one() -> None:
    actor = Actor.of(Principal(user_id="s1", role="user", auth_kind="service_key", service_role="runtime"))
    assert (actor.kind, actor.credential) == ("service_account", "service_key")


def test_type_filters() -> None:
    assert type_filter("login.failed") == ("login.failed", False)
    assert type_filter("login.*") == ("login.", True)
    assert type_filter("") == ("", False)
