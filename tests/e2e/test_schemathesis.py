"""The REST contract checked from outside by schemathesis: every operation of the OpenAPI document
(gen/openapi/the0.openapi.json, the bytes Envoy serves at /api/openapi.json) against the real stack
through Envoy, with every check schemathesis has, on cases derived from the document alone.

One stack for the module (SQLite, the session's NATS, an Envoy of its own). Authenticated as a
registered user: operations that take an API key get one (`x-api-key`), session-only operations a
Bearer token; the two that end sessions (logout, logout-everywhere) a fresh login of a second user
each time, so they cannot log the others out. `ignored_auth` then probes each operation without
and with wrong credentials.

Bounded and deterministic: derandomized Hypothesis, few examples per operation, no example
database. What the document alone cannot predict is left out by name, each with its reason:
operations in EXCLUDED, single checks of an operation in CHECKS_EXCLUDED, and the two settings in
CONFIG (pageToken, the QUERY method); nothing else is. Rules the server enforced without the
document saying so were declared in the protos instead (docs/architecture.md, "Contract tests").
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.auths import AuthContext
from schemathesis.checks import CHECKS
from schemathesis.config import SchemathesisConfig

from tests.fixtures.accounts import PASSWORD
from tests.fixtures.server import make_test_settings
from the0.server.app import build
from the0.server.db.migrate import upgrade_to_head

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "gen" / "openapi" / "the0.openapi.json"

MAX_EXAMPLES = 8

# Operations the document cannot describe well enough for generated cases, with the reason.
EXCLUDED = {
    # NDJSON streams stay open until the resource changes or is deleted: a generated case waits
    # for its timeout, and schemathesis validates a body as one document, not line by line.
    "BotService_WatchBot": "NDJSON stream (open until the bot changes)",
    "BotService_StreamBotLogs": "NDJSON stream (open until the bot stops)",
    "BacktestService_WatchBacktest": "NDJSON stream (open until the backtest ends)",
    "CustomBotService_WatchCustomBot": "NDJSON stream (open until the review ends)",
}

# Checks an operation cannot pass on generated data alone, by operation and check, with the reason.
# positive_data_acceptance expects a 2xx (or 401/403/404/409/429) for every schema-valid request;
# these rules depend on state or on policy no schema can state.
CHECKS_EXCLUDED = {
    "AuthService_Register": {"positive_data_acceptance": "the password policy (configured minimum length, "
                             "breached passwords, trivial patterns) is the server's, not a schema rule"},
    "AuthService_ChangePassword": {"positive_data_acceptance": "currentPassword must be the caller's; "
                                   "the password policy as for Register"},
    "AuthService_ResetPassword": {"positive_data_acceptance": "the token must be one the server mailed"},
    "AuthService_VerifyEmail": {"positive_data_acceptance": "the token must be one the server mailed"},
    "BotService_CreateBot": {"positive_data_acceptance": "config is checked against the schema of the "
                             "custom bot it names (an approved one of the caller's)"},
    "BotService_UpdateBot": {"positive_data_acceptance": "config as for CreateBot; updateMask paths "
                             "are a closed list (name, config, *)"},
    "BotService_UpdateBot_Put": {"positive_data_acceptance": "as for PATCH"},
    "BacktestService_CreateBacktest": {"positive_data_acceptance": "config as for CreateBot"},
    "ApiKeyService_CreateApiKey": {"positive_data_acceptance": "expireTime must be in the future: "
                                   "the proto says so (timestamp.gt_now), JSON Schema cannot"},
    "AuthService_CompleteLogin": {"positive_data_acceptance": "challengeToken must be one the server "
                                  "issued at Login, and the code the user's authenticator shows"},
    "AuthService_ConfirmTotpEnrollment": {"positive_data_acceptance": "the code must be the one the "
                                          "user's authenticator shows for the pending secret"},
    "AuthService_DisableTotp": {"positive_data_acceptance": "password must be the account's, and the "
                                "code the user's authenticator shows (or an unused recovery code)"},
    "AuthService_DeleteAccount": {"positive_data_acceptance": "password must be the account's (so the "
                                  "module's user is never deleted), and the second factor as for "
                                  "DisableTotp"},
    "AuthService_ListAuditEvents": {"positive_data_acceptance": "since must be before until: a rule "
                                    "between two timestamps, which JSON Schema cannot state"},
    "AdminService_ListAuditEvents": {"positive_data_acceptance": "as for AuthService_ListAuditEvents"},
    # /api/custom-bots/upload is also GetCustomBot's /api/custom-bots/{id} with the id 'upload': GET
    # is routed (and answered 400, not a UUID), and Allow lists it.
    "CustomBotService_UploadCustomBot": {"allow_header_conformance": "GET is GetCustomBot's",
                                         "unsupported_method": "GET is GetCustomBot's",
                                         "positive_data_acceptance": "any bytes fit `format: binary`; a "
                                         "bot is a zip with a valid bot-config.yaml"},
}

# Every check schemathesis has is enabled by default (none is turned off here); generation is
# deterministic (derandomized Hypothesis, no example database) and small.
CONFIG = SchemathesisConfig.from_dict({
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    # Page tokens are opaque and signed: a client sends '' or the nextPageToken it was given.
    "parameters": {"query.pageToken": ""},
    "phases": {"coverage": {
        # Every method RFC 9110 names, but not QUERY (an IETF draft): Envoy refuses a QUERY without
        # content-type as malformed (400) before routing; with one it is 405 like the others
        # (tests/e2e/test_edge_replies.py::test_query_method_is_405_with_allow).
        "unexpected-methods": ["get", "put", "post", "delete", "options", "patch", "trace"],
    }},
})
# The upload's raw body: generated bytes, sent as they are.
schemathesis.serializer.alias("application/zip", "application/octet-stream")
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG).exclude(operation_id=list(EXCLUDED))


@dataclass
class Credentials:
    base_url: str
    access_token: str
    api_key: str
    session_user_email: str


# Operations that end the caller's sessions: each case logs in the second user afresh.
ENDS_SESSIONS = {"AuthService_Logout", "AuthService_LogoutEverywhere"}


# Cases are generated before the stack exists (the coverage phase, at collection): the auth provider
# marks which credential a case carries, the test puts the real one in before the call.
API_KEY, BEARER, FRESH_BEARER = "<api key>", "Bearer <token>", "Bearer <fresh login>"


@schema.auth(refresh_interval=None, retry_on=[])
class TheZeroAuth:
    """An API key where the operation accepts one, else a Bearer token (a fresh login for logouts)."""

    def get(self, case: Case, ctx: AuthContext) -> dict[str, str]:
        raw = case.operation.definition.raw
        if raw.get("operationId") in ENDS_SESSIONS:
            return {"Authorization": FRESH_BEARER}
        schemes = {name for requirement in raw.get("security", []) for name in requirement}
        if "ApiKeyHeader" in schemes:
            return {"x-api-key": API_KEY}
        return {"Authorization": BEARER}

    def set(self, case: Case, data: dict[str, str], ctx: AuthContext) -> None:
        case.headers = {**(case.headers or {}), **data}


def _put_credentials_in(case: Case, creds: Credentials) -> None:
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if value == API_KEY:
            headers[name] = creds.api_key
        elif value == BEARER:
            headers[name] = f"Bearer {creds.access_token}"
        elif value == FRESH_BEARER:
            reply = httpx.post(f"{creds.base_url}/api/auth/login", timeout=30,
                               json={"email": creds.session_user_email, "password": PASSWORD})
            reply.raise_for_status()
            headers[name] = f"Bearer {reply.json()['accessToken']}"


def _call_and_validate(case: Case, creds: Credentials) -> None:
    _put_credentials_in(case, creds)
    excluded = CHECKS_EXCLUDED.get(case.operation.definition.raw["operationId"], {})
    case.call_and_validate(base_url=creds.base_url, timeout=30,
                           excluded_checks=CHECKS.get_by_names(list(excluded)))


async def _register(http: httpx.AsyncClient) -> tuple[str, str]:
    name = f"u{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    reply = await http.post("/api/auth/register", json={"email": email, "password": PASSWORD, "username": name})
    assert reply.status_code == 200, reply.text
    return email, reply.json()["accessToken"]


@pytest.fixture(scope="module")
async def edge(
    tmp_path_factory: pytest.TempPathFactory, nats_server: Any, envoy_factory: Any
) -> AsyncIterator[Credentials]:
    """One stack for every operation: the server, Envoy in front, a user with an API key."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{tmp / 'the0.db'}"
    upgrade_to_head(url)
    settings = make_test_settings(tmp, database_url=url, nats_url=nats_server.url)
    app = await build(settings)
    await app.start()
    envoy = None
    try:
        await app.nats.connected.wait()
        envoy = await envoy_factory(app.port, max_upload_bytes=settings.max_upload_bytes)
        async with httpx.AsyncClient(base_url=envoy.http_url, timeout=30) as http:
            _, token = await _register(http)
            session_user_email, _ = await _register(http)
            key = await http.post("/api/api-keys", json={"name": "schemathesis"},
                                  headers={"authorization": f"Bearer {token}"})
            assert key.status_code == 200, key.text
        yield Credentials(envoy.http_url, token, key.json()["secret"], session_user_email)
    finally:
        if envoy is not None:
            await envoy.astop()
        await app.stop()


@schema.parametrize()
@hypothesis.settings(deadline=None, database=None)
async def test_the_edge_keeps_the_documented_contract(case: Case, edge: Credentials) -> None:
    # The stack runs on this event loop: the blocking HTTP call goes to a thread.
    await asyncio.to_thread(_call_and_validate, case, edge)
