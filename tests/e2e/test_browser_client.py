"""The TypeScript client in a real browser: Debian's headless chromium, driven by Playwright for Python.

A page served from the stack's FRONTEND_URL origin loads the client's ES module output
(clients/typescript/dist, built by `make ts-client`) and openapi-fetch through an import map, and
talks to the real stack through Envoy: register, log in, refresh, create an API key, upload the
sample bot (examples/sma-crossover) with progress, follow its watch stream until the test's
analyzer approves it, create/deploy/stop a bot, and read an error's reason and request id.
The same page from another origin is refused by CORS on every operation of the OpenAPI document.

The browser is /usr/bin/chromium (`make system-deps`), never one Playwright downloads; without it
the test is skipped locally and fails with CI set.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import jwt
import pytest

from tests.e2e.test_custom_bots import _verdict
from tests.fixtures.server import TEST_JWT_SECRET
from the0.devtools.embedded.processes import free_port
from the0.server.events.nats_connection import connect_nats

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CLIENT_DIST = ROOT / "clients" / "typescript" / "dist" / "index.js"
OPENAPI_FETCH = ROOT / "clients" / "typescript" / "node_modules" / "openapi-fetch" / "dist" / "index.mjs"
SAMPLE_BOT = ROOT / "examples" / "sma-crossover"
DOCUMENT = ROOT / "gen" / "openapi" / "the0.openapi.json"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>the0 client test page</title>
<script type="importmap">{"imports": {"openapi-fetch": "/openapi-fetch.mjs"}}</script>
<script type="module">
import * as the0 from "/client/index.js";
window.the0 = the0;
document.title = "ready";
</script></head><body></body></html>
"""


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def sample_bot_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(SAMPLE_BOT.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The test page, the client's ES modules and the sample bot's zip, as static files."""
    if not CLIENT_DIST.is_file() or not OPENAPI_FETCH.is_file():
        _unavailable(f"{CLIENT_DIST} or {OPENAPI_FETCH} is missing: run `make ts-client`")
    root = tmp_path / "site"
    (root / "client").mkdir(parents=True)
    shutil.copy(CLIENT_DIST, root / "client" / "index.js")
    shutil.copy(OPENAPI_FETCH, root / "openapi-fetch.mjs")
    (root / "index.html").write_text(PAGE)
    (root / "sma-crossover.zip").write_bytes(sample_bot_zip())
    return root


def _serve(root: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def frontend(site: Path) -> Iterator[str]:
    """The origin the stack's FRONTEND_URL names."""
    yield from _serve(site)


@pytest.fixture
def other_origin(site: Path) -> Iterator[str]:
    """The same page from an origin CORS does not allow."""
    yield from _serve(site)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed: {exc}")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing: run `make system-deps`")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Any, origin: str) -> Any:
    page = await browser.new_page()
    await page.goto(f"{origin}/index.html")
    await page.wait_for_function("document.title === 'ready'", timeout=10_000)
    return page


async def test_the_client_in_a_browser_from_the_frontend_origin(
    stack_factory: Any, isolated_nats: Any, browser: Any, frontend: str
) -> None:
    stack = await stack_factory(envoy=True, nats_url=isolated_nats.url, frontend_url=frontend)
    await asyncio.wait_for(stack.app.events.stream_ready.wait(), 10)
    page = await open_page(browser, frontend)
    await page.evaluate("(baseUrl) => { window.client = window.the0.createThe0Client({ baseUrl }); }",
                        stack.http_url)
    name = f"b{uuid.uuid4().hex[:10]}"
    email, password = f"{name}@example.com", "correct horse battery"

    registered = await page.evaluate(
        """async ([email, password, username]) => {
            const { data, error } = await client.api.POST("/api/auth/register", { body: { email, password, username } });
            return { error, stored: client.tokens.accessToken === data?.accessToken && !!data?.refreshToken };
        }""", [email, password, name])
    assert registered == {"error": None, "stored": True}

    logged_in = await page.evaluate(
        """async ([email, password]) => {
            const before = client.tokens.refreshToken;
            const { data, error } = await client.api.POST("/api/auth/login", { body: { email, password } });
            const me = await client.api.GET("/api/auth/me");
            return { ok: !error && !!data?.accessToken, newSession: client.tokens.refreshToken !== before,
                     email: me.data?.email ?? me.data?.user?.email };
        }""", [email, password])
    assert logged_in == {"ok": True, "newSession": True, "email": email}

    refreshed = await page.evaluate(
        """async () => {
            const before = client.tokens.refreshToken;
            const ok = await client.refresh();
            const me = await client.api.GET("/api/auth/me");
            return { ok, rotated: client.tokens.refreshToken !== before, me: me.response.status };
        }""")
    assert refreshed == {"ok": True, "rotated": True, "me": 200}

    # An access token past its expiry: the client's next call gets 401 TOKEN_EXPIRED, refreshes and retries.
    access = await page.evaluate("() => client.tokens.accessToken")
    claims = jwt.decode(access, options={"verify_signature": False})
    expired = jwt.encode(claims | {"iat": int(time.time()) - 3600, "exp": int(time.time()) - 1800},
                         TEST_JWT_SECRET, algorithm="HS256", headers=jwt.get_unverified_header(access))
    renewed = await page.evaluate(
        """async (expired) => {
            client.tokens.accessToken = expired;
            const before = client.tokens.refreshToken;
            const me = await client.api.GET("/api/auth/me");
            return { me: me.response.status, renewed: client.tokens.accessToken !== expired,
                     rotated: client.tokens.refreshToken !== before };
        }""", expired)
    assert renewed == {"me": 200, "renewed": True, "rotated": True}

    api_key = await page.evaluate(
        """async (baseUrl) => {
            const { data, error } = await client.api.POST("/api/api-keys", { body: { name: "browser key" } });
            const keyed = window.the0.createThe0Client({ baseUrl, apiKey: data?.secret });
            const listed = await keyed.api.GET("/api/custom-bots");
            return { error, hasSecret: !!data?.secret, name: data?.apiKey?.name, withKey: listed.response.status };
        }""", stack.http_url)
    assert api_key == {"error": None, "hasSecret": True, "name": "browser key", "withKey": 200}

    uploaded = await page.evaluate(
        """async () => {
            const zip = await (await fetch("/sma-crossover.zip")).blob();
            const progress = [];
            const bot = await client.uploadCustomBot(zip, (sent, total) => progress.push([sent, total]));
            window.customBotStates = [];
            window.watched = (async () => {
                for await (const event of client.watchCustomBot(bot.id)) {
                    if (event.customBot) window.customBotStates.push(event.customBot.state);
                }
                return window.customBotStates;
            })();
            const [sent, total] = progress.at(-1) ?? [0, -1];
            return { id: bot.id, name: bot.name, state: bot.state, complete: sent === total && total === zip.size };
        }""")
    assert uploaded["name"] == "sma-crossover" and uploaded["complete"], uploaded
    assert uploaded["state"] == "CUSTOM_BOT_STATE_PENDING_REVIEW"

    # The security analyzer's verdict, as the platform's analyzer publishes it, once the page watches.
    await page.wait_for_function("window.customBotStates.length > 0", timeout=10_000)
    nc = await connect_nats(isolated_nats.url, name="test-analyzer")
    try:
        await _verdict(nc.jetstream(), "custom-bot.approved", {"customBotId": uploaded["id"], "score": 5})
    finally:
        await nc.close()
    states = await page.evaluate("() => window.watched")
    assert states[0] == "CUSTOM_BOT_STATE_PENDING_REVIEW" and states[-1] == "CUSTOM_BOT_STATE_APPROVED"

    lifecycle = await page.evaluate(
        """async () => {
            const config = { type: "scheduled/sma-crossover", version: "1.0.0", symbol: "BTC/USDT",
                             schedule: "*/5 * * * *" };
            const created = await client.api.POST("/api/bots", { body: { name: "browser bot", config } });
            const id = created.data?.id;
            const params = { path: { id } };
            const deployed = await client.api.POST("/api/bots/{id}/deploy", { params, body: { requestId: "browser" } });
            const stopped = await client.api.POST("/api/bots/{id}/stop", { params, body: {} });
            return [created.data?.state ?? created.error, deployed.data?.state ?? deployed.error,
                    stopped.data?.state ?? stopped.error];
        }""")
    assert lifecycle == ["BOT_STATE_DRAFT", "BOT_STATE_DEPLOYING", "BOT_STATE_STOPPING"]

    failed = await page.evaluate(
        """async () => {
            const config = { type: "scheduled/sma-crossover", version: "1.0.0", schedule: "*/5 * * * *" };
            const { error, response } = await client.api.POST("/api/bots", { body: { name: "no symbol", config } });
            const thrown = new window.the0.The0Error(response.status, error, response.headers);
            return { status: thrown.status, reason: thrown.reason, requestId: thrown.requestId,
                     header: response.headers.get("x-request-id") };
        }""")
    assert failed["status"] == 400 and failed["reason"] == "CONFIG_INVALID", failed
    assert failed["requestId"] and failed["requestId"] == failed["header"], failed


async def test_every_operation_is_blocked_by_cors_from_another_origin(
    stack_factory: Any, browser: Any, frontend: str, other_origin: str
) -> None:
    stack = await stack_factory(envoy=True, frontend_url=frontend)
    page = await open_page(browser, other_origin)
    operations = [
        (method.upper(), path.replace("{id}", str(uuid.uuid4())))
        for path, item in json.loads(DOCUMENT.read_text())["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(operations) > 30
    outcomes = await page.evaluate(
        """async ([baseUrl, operations]) => {
            const outcomes = {};
            for (const [method, path] of operations) {
                // A plain request (no preflight: the browser sends it and withholds the answer) and
                // one with the client's headers (refused at the preflight).
                const plain = method === "GET" ? {} : { method, body: "{}" };
                const withHeaders = { ...plain, headers: { authorization: "Bearer x", "content-type": "application/json" } };
                for (const [kind, init] of [["plain", plain], ["headers", withHeaders]]) {
                    let outcome;
                    try { outcome = `answered ${(await fetch(baseUrl + path, init)).status}`; }
                    catch (error) { outcome = error.name; }
                    outcomes[`${kind} ${method} ${path}`] = outcome;
                }
            }
            const client = window.the0.createThe0Client({ baseUrl });
            try { await client.api.POST("/api/auth/login", { body: { email: "a@example.com", password: "x" } }); outcomes.client = "answered"; }
            catch (error) { outcomes.client = error.name; }
            return outcomes;
        }""", [stack.http_url, operations])
    assert outcomes == {key: "TypeError" for key in outcomes}, {k: v for k, v in outcomes.items() if v != "TypeError"}
    assert len(outcomes) == 2 * len(operations) + 1
