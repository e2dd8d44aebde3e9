"""The `the0` binary, run as a person runs it, against the real stack (server, PostgreSQL, NATS, S3).

Every command is a subprocess of the installed console script; prompts, tables and progress bars are
checked in a pseudo-terminal (pexpect). The server runs in this test's event loop, so the blocking
pexpect calls go through a thread.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pexpect
import pytest

from the0.client import The0Client
from the0.devtools.publish_event import publish
from the0.server.background import cancel_and_wait

THE0 = str(Path(sys.executable).with_name("the0"))
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sma-crossover"
PASSWORD = "correct horse battery"
ADMIN_EMAIL, ADMIN_PASSWORD = "root@example.com", "admin password of the tests"
# The CLI is a client: one database is enough, and PostgreSQL is what production runs.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    @property
    def error_line(self) -> str:
        """A failure is exactly one line on stderr, never a traceback."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err and lines[0].startswith("the0: "), self.err
        return lines[0]


class Person:
    """One person's shell: their own HOME and config file, and the API's address in THE0_API_URL."""

    def __init__(self, home: Path, url: str | None) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / ".the0" / "config.json"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("THE0_")}
        self.env |= {"HOME": str(home), "THE0_CONFIG": str(self.config), "COLUMNS": "200", "TERM": "xterm"}
        if url:
            self.env["THE0_API_URL"] = url

    async def run(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> Run:
        process = await asyncio.create_subprocess_exec(
            THE0, *args, env=self.env, cwd=cwd or self.home, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate(stdin.encode() if stdin is not None else b"")
        return Run(process.returncode or 0, out.decode(), err.decode())

    async def ok(self, *args: str, **kwargs) -> Run:
        result = await self.run(*args, **kwargs)
        assert result.code == 0, (args, result)
        return result

    def saved(self, profile: str = "default") -> dict[str, str]:
        return json.loads(self.config.read_text())["profiles"][profile]

    def spawn(self, *args: str, cwd: Path | None = None) -> pexpect.spawn:
        return pexpect.spawn(THE0, list(args), env=self.env, cwd=str(cwd or self.home), encoding="utf-8",
                             timeout=30, dimensions=(50, 200))

    async def register(self, url_flag: str | None = None) -> None:
        name = f"u{uuid.uuid4().hex[:10]}"
        extra = ["--url", url_flag] if url_flag else []
        await self.ok("register", "--email", f"{name}@example.com", "--username", name, "--password-stdin",
                      *extra, stdin=PASSWORD + "\n")


async def in_pty(child: pexpect.spawn, script: list[tuple[str, str | None]]) -> tuple[int, str]:
    """Expect each pattern, answer it (None: nothing), then wait for the end; returns (exit code, output)."""

    def drive() -> tuple[int, str]:
        seen = []
        for pattern, answer in script:
            child.expect(pattern)
            seen.append(child.before + child.after)
            if answer is not None:
                child.sendline(answer)
        child.expect(pexpect.EOF)
        seen.append(child.before)
        child.close()
        return child.exitstatus if child.exitstatus is not None else -1, "".join(seen)

    return await asyncio.to_thread(drive)


async def approve(nats_url: str, custom_bot_id: str) -> None:
    await publish(nats_url, "custom-bot.approved", {"customBotId": custom_bot_id, "score": 97})


def bot_folder(tmp_path: Path, version: str = "1.0.0") -> Path:
    """The example bot's folder with what should never be uploaded beside it."""
    folder = tmp_path / f"bot-{version}"
    shutil.copytree(EXAMPLE, folder)
    text = (folder / "bot-config.yaml").read_text().replace("version: 1.0.0", f"version: {version}")
    (folder / "bot-config.yaml").write_text(text)
    for junk in ("__pycache__/main.cpython-311.pyc", ".git/config", "tests/test_main.py", "run.log",
                 "notes/secret.txt", ".env"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("not for upload\n")
    (folder / ".the0ignore").write_text("# my own rules\nnotes/\n")
    return folder


@pytest.fixture
async def stack(stack_factory):
    return await stack_factory(admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD)


# -- a person's day, piped (JSON) ----------------------------------------------------------------------


async def test_a_person_deploys_a_bot_from_its_folder_and_runs_it(stack, nats_server, tmp_path):
    ada = Person(tmp_path / "ada", url=None)
    # --url after the subcommand works, and register saves it in the profile.
    await ada.register(url_flag=stack.grpc_target)
    assert ada.saved()["url"] == stack.grpc_target
    me = (await ada.ok("whoami")).json()
    assert me["role"] == "ROLE_USER"

    # Deploy from the folder (the current directory): .the0ignore and the defaults leave the junk out.
    folder = bot_folder(tmp_path)
    uploaded = (await ada.ok("custom-bots", "deploy", cwd=folder)).json()
    assert uploaded["state"] == "CUSTOM_BOT_STATE_PENDING_REVIEW" and uploaded["version"] == "1.0.0"
    archive = tmp_path / "downloaded.zip"
    await ada.ok("custom-bots", "download", uploaded["id"], "-o", str(archive))
    names = sorted(zipfile.ZipFile(archive).namelist())
    assert names == sorted(p.name for p in EXAMPLE.iterdir() if p.is_file())

    # The watch prints the current state, then the change, then ends: JSON lines, no heartbeats.
    # Approved only once the watch has printed its first line, as a person would see it.
    watch = await asyncio.create_subprocess_exec(THE0, "custom-bots", "watch", uploaded["id"], env=ada.env,
                                                 stdout=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        first = await watch.stdout.readline()
        await approve(nats_server.url, uploaded["id"])
        rest, _ = await watch.communicate()
    assert watch.returncode == 0
    states = [json.loads(line)["state"] for line in (first + rest).decode().splitlines()]
    assert states == ["CUSTOM_BOT_STATE_PENDING_REVIEW", "CUSTOM_BOT_STATE_APPROVED"]

    config = {"type": "scheduled/sma-crossover", "version": "1.0.0", "schedule": "*/5 * * * *",
              "symbol": "BTC/USDT", "fast_period": 3, "apiKey": "exchange-key-123"}
    bot = (await ada.ok("bots", "create", "my-sma", "--config", json.dumps(config))).json()
    assert bot["config"]["fast_period"] == 3 and isinstance(bot["config"]["fast_period"], int)  # not 3.0
    assert bot["config"]["apiKey"] == "********"

    updated = (await ada.ok("bots", "update", bot["id"], "--set", "fast_period=5", "--set", "symbol=ETH/USDT")
               ).json()
    assert updated["config"]["fast_period"] == 5 and updated["config"]["symbol"] == "ETH/USDT"
    assert updated["config"]["schedule"] == "*/5 * * * *"  # the keys not --set are kept
    stale = await ada.run("bots", "update", bot["id"], "--name", "renamed", "--etag", bot["etag"])
    assert stale.code == 6 and "[ETAG_MISMATCH]" in stale.error_line
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config | {"fast_period": 4}))
    replaced = (await ada.ok("bots", "update", bot["id"], "--config", f"@{config_file}", "--name", "sma-2")).json()
    assert replaced["name"] == "sma-2" and replaced["config"]["fast_period"] == 4

    deployed = (await ada.ok("bots", "deploy", bot["id"], "--request-id", "deploy-1")).json()
    assert deployed["state"] == "BOT_STATE_DEPLOYING"
    again = (await ada.ok("bots", "deploy", bot["id"], "--request-id", "deploy-1")).json()
    assert again["etag"] == deployed["etag"]  # the same request id: no second effect
    assert [b["id"] for b in (await ada.ok("bots", "list", "--state", "deploying")).json()] == [bot["id"]]
    assert (await ada.ok("bots", "list", "--state", "running")).json() == []
    assert (await ada.ok("bots", "list", "--output", "id")).out.split() == [bot["id"]]

    # A destructive command asks; without a terminal only --yes goes ahead.
    refused = await ada.run("bots", "delete", bot["id"])
    assert refused.code == 10 and "--yes" in refused.error_line
    assert (await ada.ok("bots", "get", bot["id"])).json()["id"] == bot["id"]

    # Paging: --page-size gives one page and says how to go on; --all gives everything.
    for index in range(3):
        await ada.ok("bots", "create", f"extra-{index}", "--config", json.dumps(config))
    page = await ada.ok("bots", "list", "--page-size", "2")
    assert len(page.json()) == 2 and "--page-token" in page.err
    token = page.err.split("--page-token ")[1].split()[0]
    rest = (await ada.ok("bots", "list", "--page-size", "2", "--page-token", token)).json()
    assert len(rest) == 2 and not {b["id"] for b in rest} & {b["id"] for b in page.json()}
    assert len((await ada.ok("bots", "list", "--page-size", "2", "--all")).json()) == 4

    await ada.ok("bots", "delete", bot["id"], "--yes")
    assert (await ada.run("bots", "get", bot["id"])).code == 5

    # Backtests: create (request id), filter by state, cancel (asks first).
    backtest_config = {"type": "scheduled/sma-crossover", "version": "1.0.0", "closes": [1, 2, 3, 4, 5]}
    backtest = (await ada.ok("backtests", "create", "first", "--config", json.dumps(backtest_config))).json()
    assert backtest["state"] == "BACKTEST_STATE_PENDING" and backtest["config"]["closes"] == [1, 2, 3, 4, 5]
    assert [b["id"] for b in (await ada.ok("backtests", "list", "--state", "pending")).json()] == [backtest["id"]]
    cancelled = (await ada.ok("backtests", "cancel", backtest["id"], "--yes")).json()
    assert cancelled["state"] == "BACKTEST_STATE_CANCELLED"
    no_results = await ada.run("backtests", "results", backtest["id"])
    assert no_results.code != 0 and no_results.error_line

    # API keys with an expiry; YAML output.
    created = (await ada.ok("api-keys", "create", "ci-runner", "--expires", "30d")).json()
    assert created["secret"].startswith("the0_")
    expiry = datetime.fromisoformat(created["apiKey"]["expireTime"])
    assert timedelta(days=29) < expiry - datetime.now(UTC) < timedelta(days=31)
    listed = (await ada.ok("api-keys", "list", "--output", "yaml")).out
    assert f"id: {created['apiKey']['id']}" in listed and "secret" not in listed


async def test_an_admin_reviews_a_version_awaiting_human_review(stack, nats_server, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    uploaded = (await ada.ok("custom-bots", "upload", str(bot_folder(tmp_path)))).json()
    await publish(nats_server.url, "custom-bot.awaiting-human-review",
                  {"customBotId": uploaded["id"], "reasons": ["network access"]})
    async with asyncio.timeout(10):
        while (await ada.ok("custom-bots", "get", uploaded["id"])).json()["state"] != (
                "CUSTOM_BOT_STATE_AWAITING_HUMAN_REVIEW"):
            await asyncio.sleep(0.1)
    as_user = await ada.run("custom-bots", "review", uploaded["id"], "--approve")
    assert as_user.code == 4 and "[PERMISSION_DENIED]" in as_user.error_line

    # The admin keeps a profile of their own in the same config file.
    await ada.ok("login", "--email", ADMIN_EMAIL, "--password-stdin", "--profile", "admin",
                 stdin=ADMIN_PASSWORD + "\n")
    reviewed = (await ada.ok("custom-bots", "review", uploaded["id"], "--approve", "--reason", "looked at it",
                             "--profile", "admin")).json()
    assert reviewed["state"] == "CUSTOM_BOT_STATE_APPROVED"
    assert (await ada.ok("whoami")).json()["role"] == "ROLE_USER"  # the default profile is still ada
    assert (await ada.ok("whoami", "--profile", "admin")).json()["role"] == "ROLE_ADMIN"


# -- what was seen: every error is one line, a non-zero exit, and says what to do --------------------------


async def test_every_error_is_one_line_with_a_non_zero_exit(stack, tmp_path):
    nobody = Person(tmp_path / "nobody", url=stack.grpc_target)
    missing = await nobody.run("bots", "list")
    assert missing.code == 3 and "the0 login" in missing.error_line

    down = await nobody.run("health", "--url", "127.0.0.1:1")
    assert down.code == 9 and "--url" in down.error_line

    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    bad_json = await ada.run("bots", "create", "x", "--config", '{"type":')
    assert bad_json.code == 2 and "not valid JSON" in bad_json.error_line
    no_file = await ada.run("bots", "create", "x", "--config", "@nowhere.json")
    assert no_file.code == 2 and "no such file: nowhere.json" in no_file.error_line
    no_upload = await ada.run("custom-bots", "upload", "nowhere.zip")
    assert no_upload.code == 2 and "no such file or folder: nowhere.zip" in no_upload.error_line
    no_manifest = await ada.run("custom-bots", "deploy", cwd=tmp_path)
    assert no_manifest.code == 2 and "no bot-config.yaml" in no_manifest.error_line
    invalid = bot_folder(tmp_path, "1.0.1")
    (invalid / "bot-config.yaml").write_text((invalid / "bot-config.yaml").read_text()
                                             .replace("version: 1.0.1", "version: one"))
    local = await ada.run("custom-bots", "deploy", cwd=invalid)
    assert local.code == 2 and "manifest.version: must be a semantic version" in local.error_line
    assert (await ada.ok("custom-bots", "list")).json() == []  # checked here, nothing was sent
    server_side = await ada.run("bots", "create", "x", "--config", '{"type": "scheduled/nope", "version": "1.0.0"}')
    assert server_side.code == 5 and server_side.error_line
    invalid_id = await ada.run("bots", "get", "not-a-uuid")
    assert invalid_id.code == 7 and "[VALIDATION_FAILED]" in invalid_id.error_line
    bad_option = await ada.run("bots", "list", "--state", "sleeping")
    assert bad_option.code == 2 and "Traceback" not in bad_option.err
    bad_output = await ada.run("bots", "list", "--output", "xml")
    assert bad_output.code == 2

    # A failed download leaves an existing file as it was, and no temporary file behind.
    existing = tmp_path / "existing.zip"
    existing.write_bytes(b"my precious zip")
    failed = await ada.run("custom-bots", "download", str(uuid.uuid4()), "-o", str(existing))
    assert failed.code == 5 and "[NOT_FOUND]" in failed.error_line
    assert existing.read_bytes() == b"my precious zip"
    assert sorted(p.name for p in tmp_path.iterdir() if "existing" in p.name) == ["existing.zip"]

    # A broken config file is one line too, naming the file.
    ada.config.write_text("{not json")
    broken = await ada.run("whoami")
    assert broken.code == 2 and str(ada.config) in broken.error_line and "not valid JSON" in broken.error_line


async def test_ctrl_c_on_a_watch_is_one_line_and_exit_130(stack, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    uploaded = (await ada.ok("custom-bots", "upload", str(bot_folder(tmp_path)))).json()
    child = ada.spawn("custom-bots", "watch", uploaded["id"])

    def interrupt() -> tuple[int | None, str]:
        # Generous waits: late in a full suite on 2 loaded cores, the CLI's start and the analyzer's
        # verdict each took most of pexpect's default 30 s. What is asserted is the exit, not its speed.
        child.expect("pending review", timeout=120)
        child.sendintr()
        child.expect(pexpect.EOF, timeout=60)
        child.close()
        return child.exitstatus, child.before

    code, rest = await asyncio.to_thread(interrupt)
    assert code == 130 and "the0: interrupted" in rest and "Traceback" not in rest


# -- sessions that last ------------------------------------------------------------------------------


def aged(access_token: str, minutes: int) -> str:
    """The same access token as if issued ``minutes`` ago (signed with the test key, so only its age differs)."""
    header = jwt.get_unverified_header(access_token)
    claims = jwt.decode(access_token, options={"verify_signature": False})
    lifetime = claims["exp"] - claims["iat"]
    claims["iat"] = int(time.time()) - minutes * 60
    claims["exp"] = claims["iat"] + lifetime
    from tests.fixtures.server import TEST_JWT_SECRET

    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256", headers={"kid": header["kid"]})


async def test_a_20_minute_old_session_still_works_and_the_rotated_token_is_saved(stack, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    saved = ada.saved()
    profile = json.loads(ada.config.read_text())
    profile["profiles"]["default"]["accessToken"] = aged(saved["accessToken"], minutes=20)
    ada.config.write_text(json.dumps(profile))

    # API-key management needs the session: the expired access token is refreshed on the fly.
    created = await ada.ok("api-keys", "create", "laptop")
    assert created.json()["secret"].startswith("the0_")
    now = ada.saved()
    assert now["refreshToken"] != saved["refreshToken"] and now["accessToken"] != saved["accessToken"]
    assert (await ada.ok("api-keys", "list")).json()[0]["name"] == "laptop"  # the saved new token works

    refreshed = await ada.ok("refresh")
    assert '"accessToken":' not in refreshed.out and '"refreshToken":' not in refreshed.out  # never printed
    assert (await ada.ok("whoami")).json()["email"] == (await ada.ok("whoami")).json()["email"]

    # The old refresh token was rotated away: reusing it (which the CLI never does) ends the whole session.
    with pytest.raises(Exception, match="REFRESH_TOKEN_REUSED"):
        await asyncio.to_thread(The0Client(stack.grpc_target, refresh_token=saved["refreshToken"]).refresh)
    ended = await ada.run("api-keys", "list")
    assert ended.code == 3 and "the0 login" in ended.error_line


async def test_a_watch_outlives_its_access_token(stack_factory, nats_server, tmp_path):
    # Tokens live one second: the server ends the watch when its token expires, the client refreshes
    # and watches again (the first message of the new watch is the current state, printed only if changed).
    stack = await stack_factory(jwt_expires_in=timedelta(seconds=1))
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    uploaded = (await ada.ok("custom-bots", "upload", str(bot_folder(tmp_path)))).json()
    watch = await asyncio.create_subprocess_exec(THE0, "custom-bots", "watch", uploaded["id"], env=ada.env,
                                                 stdout=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        first = await watch.stdout.readline()
        await asyncio.sleep(3.5)  # three tokens' lifetimes: the watch is ended and reopened meanwhile
        await approve(nats_server.url, uploaded["id"])
        rest, _ = await watch.communicate()
    assert watch.returncode == 0
    assert [json.loads(line)["state"] for line in (first + rest).decode().splitlines()] == [
        "CUSTOM_BOT_STATE_PENDING_REVIEW", "CUSTOM_BOT_STATE_APPROVED"]


async def test_a_revoked_saved_key_falls_back_to_the_session_and_logout_clears_everything(stack, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    key = (await ada.ok("api-keys", "create", "laptop", "--save")).json()
    assert ada.saved()["apiKey"] == key["secret"]
    client = The0Client(stack.grpc_target, access_token=ada.saved()["accessToken"])
    await asyncio.to_thread(client.revoke_api_key, key["apiKey"]["id"])
    client.close()
    await asyncio.sleep(1.2)  # the API-key miss cache and revocation fan-out

    fallback = await ada.ok("whoami")
    assert fallback.json()["email"].endswith("@example.com")
    assert "saved API key was refused" in fallback.err and "apiKey" not in ada.saved()

    second = (await ada.ok("api-keys", "create", "desk", "--save")).json()
    out = await ada.ok("logout")
    assert "revoked the saved API key" in out.err
    assert set(ada.saved()) <= {"url", "email"}
    after = await ada.run("whoami")
    assert after.code == 3 and "the0 login" in after.error_line
    with The0Client(stack.grpc_target, api_key=second["secret"]) as keyed, pytest.raises(
            Exception, match="API_KEY_INVALID"):
        await asyncio.to_thread(keyed.me)


# -- people at a terminal: prompts, tables, progress bars --------------------------------------------


async def test_at_a_terminal_prompts_tables_and_progress(stack, nats_server, tmp_path):
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    await ada.register()
    email = ada.saved()["email"]
    await ada.ok("logout")

    code, seen = await in_pty(ada.spawn("login", "--email", email), [("Password: ", PASSWORD)])
    assert code == 0 and "Logged in as" in seen and PASSWORD not in seen.split("Password: ", 1)[1]

    code, seen = await in_pty(ada.spawn("custom-bots", "deploy", cwd=bot_folder(tmp_path)), [])
    assert code == 0, seen
    assert "uploading" in seen and "KB" in seen  # the bar: sizes (and speed)
    assert "pending review" in seen and "CUSTOM_BOT_STATE" not in seen  # a field list, not JSON
    custom_bot_id = (await ada.ok("custom-bots", "list")).json()[0]["id"]
    await approve(nats_server.url, custom_bot_id)

    code, seen = await in_pty(ada.spawn("custom-bots", "list"), [])
    assert code == 0 and "NAME" in seen and "VERSION" in seen and "sma-crossover" in seen
    assert "readme" not in seen.lower()  # no README on every line

    config = {"type": "scheduled/sma-crossover", "version": "1.0.0", "schedule": "*/5 * * * *", "symbol": "X"}
    bot = (await ada.ok("bots", "create", "tty-bot", "--config", json.dumps(config))).json()
    await ada.ok("bots", "deploy", bot["id"])
    code, seen = await in_pty(ada.spawn("bots", "list"), [])
    assert code == 0 and "STATE" in seen and "deploying" in seen and "ago" in seen

    code, seen = await in_pty(ada.spawn("bots", "delete", bot["id"]), [(r"It is deploying.*\[y/N\]", "n")])
    assert code == 10 and "not confirmed" in seen
    assert (await ada.ok("bots", "get", bot["id"])).json()["id"] == bot["id"]
    code, seen = await in_pty(ada.spawn("bots", "delete", bot["id"]), [(r"\[y/N\]", "y")])
    assert code == 0 and "Deleted bot tty-bot" in seen

    # Downloads show a bar too, and end in the file.
    code, seen = await in_pty(ada.spawn("custom-bots", "download", custom_bot_id, "-o", "bot.zip"), [])
    assert code == 0 and "downloading" in seen and "Wrote bot.zip" in seen
    assert zipfile.ZipFile(io.BytesIO((ada.home / "bot.zip").read_bytes())).testzip() is None


# -- bots: executions and logs, driven by the development fake runtime ----------------------------------


async def test_a_fake_runtime_bots_executions_and_logs(stack_factory, database_url, nats_client, tmp_path):
    import contextlib

    from tests.fixtures.accounts import new_account
    from tests.integration.test_bots_support import add_custom_bot, bot_config
    from the0.devtools.fake_runtime import Deployments, FakeRuntime
    from the0.server.db.engine import create_engine, session_factory
    from the0.server.events.nats_connection import EVENTS_STREAM

    runtime_key = "runtime-key-of-at-least-thirty-two-characters"
    stack = await stack_factory(service_accounts=(("runtime", "runtime-1", runtime_key),))
    user_id, token = await new_account(stack.channel)
    engine = create_engine(database_url)
    try:
        await add_custom_bot(session_factory(engine), user_id)
    finally:
        await engine.dispose()
    ada = Person(tmp_path / "ada", url=stack.grpc_target)
    ada.config.parent.mkdir(parents=True)
    ada.config.write_text(json.dumps({"accessToken": token}))  # the earlier flat config still reads

    deployments = Deployments(stack.grpc_target, runtime_key)  # as `make fake-runtime` beside `make run`
    runtime = FakeRuntime(nats_client, stack.app.object_store, delay=0, fail=False, bots=True, bot_interval=0.2,
                          durable_prefix=f"fake-{uuid.uuid4().hex[:8]}", only_new=True, deployments=deployments)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.sleep(0.3)  # its consumers exist before the deploy is published
        bot = (await ada.ok("bots", "create", "cli-bot", "--config", json.dumps(bot_config()))).json()
        await ada.ok("bots", "deploy", bot["id"])

        # A scheduled bot: the fake runs it every 0.2 s; wait for two finished runs and their lines.
        async with asyncio.timeout(30):
            while True:
                executions = (await ada.ok("bots", "executions", bot["id"])).json()
                done = [e for e in executions if e["state"] == "BOT_EXECUTION_STATE_COMPLETED"]
                logs = (await ada.ok("bots", "logs", bot["id"], "--output", "table")).out
                if len(done) >= 2 and "run finished" in logs:
                    break
                await asyncio.sleep(0.2)
        assert done[0]["result"]["note"] == "fake runtime" and done[0]["startTime"] <= done[0]["endTime"]
        starts = [e["startTime"] for e in executions]
        assert starts == sorted(starts, reverse=True)  # newest first
        assert "FAKE run 1 of scheduled/my-bot: no user code executed" in logs
        assert len((await ada.ok("bots", "executions", bot["id"], "--page-size", "1")).json()) == 1
        lines = [json.loads(line) for line in (await ada.ok("bots", "logs", bot["id"], "--since", "1h")).out
                 .splitlines()]
        assert {line["level"] for line in lines} >= {"info", "debug"}
        missing = await ada.run("bots", "executions", str(uuid.uuid4()))
        assert missing.code == 5 and "[NOT_FOUND]" in missing.error_line

        # The watch shows the state changes (running...), -f follows the log until the bot is deleted.
        watch = asyncio.create_task(ada.run("bots", "watch", bot["id"], "--output", "table"))
        follow = asyncio.create_task(ada.run("bots", "logs", bot["id"], "-f", "--tail", "3"))
        await asyncio.sleep(2.0)
        await ada.ok("bots", "stop", bot["id"])
        async with asyncio.timeout(15):
            while (await ada.ok("bots", "get", bot["id"])).json()["state"] != "BOT_STATE_STOPPED":
                await asyncio.sleep(0.1)
        await ada.ok("bots", "delete", bot["id"], "--yes")
        async with asyncio.timeout(15):
            followed, watched = await follow, await watch
        assert followed.code == 0 and "the bot was deleted" in followed.err
        assert watched.code == 0, watched
        assert "running" in watched.out and "stopped" in watched.out and watched.out.rstrip().endswith("deleted")
        assert "heartbeat" not in watched.out
    finally:
        await cancel_and_wait(task)
        await deployments.close()
        js = nats_client.jetstream()
        for event_type in ("backtest.created", "backtest.cancel-requested", "bot.deploy-requested",
                           "bot.stop-requested"):
            with contextlib.suppress(Exception):
                await js.delete_consumer(EVENTS_STREAM, runtime.durable(event_type))


# -- the asyncio client ------------------------------------------------------------------------------


async def test_the_asyncio_client_refreshes_pages_and_streams(stack, nats_server):
    from the0.client.aio import AsyncThe0Client
    from the0.client.cli.bundle import pack_folder
    from the0.client.errors import NotFoundError
    from the0.client.values import struct_to_dict

    saved = []
    async with AsyncThe0Client(stack.grpc_target, on_tokens=saved.append) as client:
        name = f"u{uuid.uuid4().hex[:10]}"
        tokens = await client.register(f"{name}@example.com", PASSWORD, name)
        assert saved == [tokens]
        client.credentials.access_token = aged(tokens.access_token, minutes=20)
        assert (await client.me()).username == name  # refreshed on the fly
        assert len(saved) == 2 and saved[1].refresh_token != tokens.refresh_token

        bundle = pack_folder(EXAMPLE)
        try:
            sent: list[int] = []
            custom_bot = await client.upload_custom_bot(bundle.path, progress=sent.append)
            assert sum(sent) == bundle.size
        finally:
            bundle.path.unlink()
        assert [c.id async for c in client.iter_custom_bots(name="sma-crossover")] == [custom_bot.id]
        events = client.watch_custom_bot(custom_bot.id)
        first = await anext(events)
        assert first.WhichOneof("event") == "custom_bot"
        await approve(nats_server.url, custom_bot.id)
        async for event in events:
            if event.WhichOneof("event") == "custom_bot":
                assert event.custom_bot.state == 2  # APPROVED, and the stream ends
        data = b"".join([chunk async for chunk in client.download_custom_bot_archive(custom_bot.id)])
        assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None

        config = {"type": "scheduled/sma-crossover", "version": "1.0.0", "schedule": "*/5 * * * *",
                  "symbol": "X", "fast_period": 3}
        bot = await client.create_bot("async", config, request_id="same")
        assert (await client.create_bot("async", config, request_id="same")).id == bot.id
        assert struct_to_dict(bot.config)["fast_period"] == 3
        updated = await client.update_bot(bot.id, config=config | {"fast_period": 4}, etag=bot.etag)
        assert struct_to_dict(updated.config)["fast_period"] == 4
        page = await client.list_bots(page_size=1)
        assert [b.id for b in page.bots] == [bot.id] and not page.next_page_token
        await client.delete_bot(bot.id, etag=updated.etag)
        with pytest.raises(NotFoundError):
            await client.get_bot(bot.id)
