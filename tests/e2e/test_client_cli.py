"""The typed client and the `the0` CLI against the real server."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from the0.client import The0Client, The0Error
from the0.client.cli import main as cli


@pytest.fixture
async def target(stack_factory):
    stack = await stack_factory()
    return stack.grpc_target


async def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_cli_health_prints_json(target, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("THE0_CONFIG", str(tmp_path / "config.json"))
    code, out, _ = await run_cli(capsys, "--url", target, "health")
    assert code == 0
    health = json.loads(out)
    assert health["status"] == "ok"
    assert health["checks"] == {"database": "ok", "nats": "ok", "objectStore": "ok"}


async def test_client_turns_rich_errors_into_typed_exceptions(target):
    def call() -> The0Error:
        with The0Client(target) as client, pytest.raises(The0Error) as raised:
            client.get_bot("nope")
        return raised.value

    error = await asyncio.to_thread(call)
    assert error.code in {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED}
    assert error.reason  # the ErrorInfo reason travelled
    assert error.reason in str(error)


async def test_cli_reports_errors_on_stderr_with_exit_code_1(target, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("THE0_CONFIG", str(tmp_path / "config.json"))
    code, out, err = await run_cli(capsys, "--url", target, "bots", "get", "nope")
    assert code == 1
    assert out == ""
    # The in-process server logs JSON to the same stderr, in any order: find the CLI's line.
    [message] = [line for line in err.splitlines() if line.startswith("the0: ")]
    assert "(TOKEN_MISSING)" in message


def test_cli_zips_a_directory_without_hidden_files(tmp_path):
    import io
    import zipfile

    from the0.client.cli import zip_directory

    (tmp_path / "bot-config.yaml").write_text("name: x\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("secret\n")
    names = zipfile.ZipFile(io.BytesIO(zip_directory(tmp_path))).namelist()
    assert names == ["bot-config.yaml", "src/main.py"]


# -- bots: executions and logs, driven by the development fake runtime ----------------------------------


def jsons(out: str) -> list[dict]:
    # The fake runtime, in this process, prints what it does to the same stdout: keep the CLI's JSON lines.
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def test_cli_shows_a_fake_runtime_bots_executions_and_logs(
    stack_factory, database_url, nats_client, capsys, tmp_path, monkeypatch
):
    import contextlib
    import uuid

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
    (tmp_path / "config.json").write_text(json.dumps({"accessToken": token}))
    monkeypatch.setenv("THE0_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.delenv("THE0_API_KEY", raising=False)

    deployments = Deployments(stack.grpc_target, runtime_key)  # as `make fake-runtime` beside `make run`
    runtime = FakeRuntime(nats_client, stack.app.object_store, delay=0, fail=False, bots=True, bot_interval=0.2,
                          durable_prefix=f"fake-{uuid.uuid4().hex[:8]}", only_new=True, deployments=deployments)
    task = asyncio.create_task(runtime.run())
    client = The0Client(stack.grpc_target, access_token=token)
    try:
        await asyncio.sleep(0.3)  # its consumers exist before the deploy is published
        bot = await asyncio.to_thread(client.create_bot, "cli bot", bot_config())
        await asyncio.to_thread(client.deploy_bot, bot.id)

        # A scheduled bot: the fake runs it every 0.2 s; wait for two finished runs and their lines.
        async with asyncio.timeout(20):
            while True:
                code, out, _ = await run_cli(capsys, "--url", stack.grpc_target, "bots", "executions", bot.id)
                assert code == 0
                executions = jsons(out)
                done = [e for e in executions if e["state"] == "BOT_EXECUTION_STATE_COMPLETED"]
                code, logs, _ = await run_cli(capsys, "--url", stack.grpc_target, "bots", "logs", bot.id)
                if len(done) >= 2 and "run finished" in logs:
                    break
                await asyncio.sleep(0.2)
        assert done[0]["result"]["note"] == "fake runtime" and done[0]["startTime"] <= done[0]["endTime"]
        starts = [e["startTime"] for e in executions]
        assert starts == sorted(starts, reverse=True)  # newest first
        assert "FAKE run 1 of scheduled/my-bot: no user code executed" in logs
        assert "deployment fetched through the platform API (GetBotDeployment)" in logs
        code, out, _ = await run_cli(capsys, "--url", stack.grpc_target, "bots", "executions", bot.id, "--limit", "1")
        assert code == 0 and len(jsons(out)) == 1

        code, out, _ = await run_cli(capsys, "--url", stack.grpc_target, "bots", "logs", bot.id, "--since", "1h",
                                     "--json")
        assert code == 0 and {line["level"] for line in jsons(out)} >= {"info", "debug"}
        code, out, _ = await run_cli(capsys, "--url", stack.grpc_target, "bots", "logs", bot.id, "--since", "1s")
        assert code == 0  # a window with few or no lines is fine
        code, _, err = await run_cli(capsys, "--url", stack.grpc_target, "bots", "executions", str(uuid.uuid4()))
        assert code == 1 and "(NOT_FOUND)" in err

        # -f follows until the bot is deleted (the stream's last message), then the CLI exits 0.
        follow = asyncio.create_task(
            asyncio.to_thread(cli, ["--url", stack.grpc_target, "bots", "logs", bot.id, "-f", "--tail", "3"])
        )
        await asyncio.sleep(1.0)
        await asyncio.to_thread(client.stop_bot, bot.id)
        async with asyncio.timeout(15):
            while (await asyncio.to_thread(client.get_bot, bot.id)).state != 5:  # BOT_STATE_STOPPED
                await asyncio.sleep(0.1)
        await asyncio.to_thread(client.delete_bot, bot.id)
        async with asyncio.timeout(15):
            assert await follow == 0
        followed = capsys.readouterr()
        assert "stopped" in followed.out and "the bot was deleted" in followed.err
    finally:
        client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await deployments.close()
        js = nats_client.jetstream()
        for event_type in ("backtest.created", "backtest.cancel-requested", "bot.deploy-requested",
                           "bot.stop-requested"):
            with contextlib.suppress(Exception):
                await js.delete_consumer(EVENTS_STREAM, runtime.durable(event_type))


def test_since_takes_durations_and_times():
    from datetime import UTC, datetime, timedelta

    from the0.client.cli import parse_since

    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2026-01-01T10:00:00") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(SystemExit):
        parse_since("yesterday")
