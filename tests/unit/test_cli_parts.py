"""The CLI's and client's parts that need no server: parsing, packing, files, numbers, retries."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import struct_pb2

from the0.bot.v1 import bot_pb2, bot_service_pb2_grpc
from the0.client import The0Client
from the0.client.aio import AsyncThe0Client
from the0.client.cli import hoist_global_options
from the0.client.cli.bundle import files_of, pack_folder
from the0.client.cli.failures import CliError
from the0.client.cli.parsing import apply_sets, parse_object, parse_time
from the0.client.cli.profiles import ConfigFile
from the0.client.cli.transfer import download_to
from the0.client.credentials import Credentials, Recovery, Used
from the0.client.errors import AuthenticationError, UnavailableError
from the0.client.values import struct_to_dict, to_dict
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sma-crossover"


def test_global_options_may_come_after_the_command():
    assert hoist_global_options(["bots", "list", "--url", "h:1", "--output=json", "--all"]) == [
        "--url", "h:1", "--output=json", "bots", "list", "--all"]
    assert hoist_global_options(["bots", "create", "x", "--", "--url"]) == ["bots", "create", "x", "--", "--url"]


def test_set_values_are_json_when_they_parse_and_nest_on_dots():
    config = {"symbol": "BTC", "risk": {"max": 1}}
    changed = apply_sets(config, ["fast=5", "symbol=ETH/USDT", "risk.max=0.5", "on=true", "tags=[\"a\"]"])
    assert changed == {"symbol": "ETH/USDT", "risk": {"max": 0.5}, "fast": 5, "on": True, "tags": ["a"]}
    assert config["symbol"] == "BTC"  # a copy
    with pytest.raises(CliError, match="key=value"):
        apply_sets({}, ["novalue"])


def test_config_arguments_fail_in_one_readable_line(tmp_path):
    with pytest.raises(CliError, match="not valid JSON: Expecting value at line 1 column 9"):
        parse_object('{"type":')
    with pytest.raises(CliError, match="no such file: nope.json"):
        parse_object("@nope.json")
    with pytest.raises(CliError, match="must be a JSON object"):
        parse_object("[1]")
    (tmp_path / "c.yaml").write_text("type: scheduled/x\nfast: 3\n")
    assert parse_object(f"@{tmp_path / 'c.yaml'}") == {"type": "scheduled/x", "fast": 3}


def test_times_take_durations_both_ways_and_iso():
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_time("90s", "--since", now=now) == now - timedelta(seconds=90)
    assert parse_time("30d", "--expires", now=now, future=True) == now + timedelta(days=30)
    assert parse_time("2026-01-01T10:00:00", "--since") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(CliError, match="--since must be like"):
        parse_time("yesterday", "--since")


def test_a_folder_is_packed_without_defaults_and_the0ignore_and_checked(tmp_path):
    folder = tmp_path / "bot"
    folder.mkdir()
    for path in EXAMPLE.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    for junk in ("__pycache__/a.pyc", ".git/HEAD", "tests/test_x.py", "debug.log", "data/big.csv", "data/keep.csv",
                 ".env", "src/__pycache__/b.pyc", "src/util.py"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("x")
    (folder / ".the0ignore").write_text("data/\n!data/keep.csv\n")
    (folder / "link.py").symlink_to(folder / "main.py")
    names = files_of(folder)
    assert "src/util.py" in names and "main.py" in names
    for left_out in ("__pycache__/a.pyc", ".git/HEAD", "tests/test_x.py", "debug.log", "data/big.csv", ".env",
                     "src/__pycache__/b.pyc", "link.py", ".the0ignore"):
        assert left_out not in names
    bundle = pack_folder(folder)
    try:
        assert bundle.manifest.manifest.name == "sma-crossover"
    finally:
        bundle.path.unlink()

    (folder / "bot-config.yaml").write_text((EXAMPLE / "bot-config.yaml").read_text()
                                            .replace("runtime: python3.11", "runtime: cobol"))
    with pytest.raises(CliError, match="manifest.runtime: must be one of python3.11, nodejs20"):
        pack_folder(folder)
    leftovers = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("the0-bundle-*.zip")
                 if p.stat().st_mtime > datetime.now().timestamp() - 5]
    assert leftovers == []


def test_a_failed_download_leaves_the_existing_file_and_no_temporary(tmp_path):
    target = tmp_path / "bot.zip"
    target.write_bytes(b"old")

    def chunks():
        yield b"new part"
        raise UnavailableError(code=grpc.StatusCode.UNAVAILABLE, message="dropped")

    with pytest.raises(UnavailableError):
        download_to(target, chunks(), total=100, label="downloading")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["bot.zip"]
    assert download_to(target, iter([b"a", b"b"]), total=2, label="downloading") == 2
    assert target.read_bytes() == b"ab"


def test_config_file_errors_are_one_line_and_the_flat_form_still_reads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{oops")
    with pytest.raises(CliError, match=r"config.json is not valid JSON .*line 1.*delete it"):
        ConfigFile.load(path)
    path.write_text(json.dumps({"accessToken": "a", "apiKey": "the0_x", "url": "h:1"}))
    config = ConfigFile.load(path)
    assert config.profile() == {"accessToken": "a", "apiKey": "the0_x", "url": "h:1"}
    config.profile("staging")["url"] = "staging:443"
    config.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ConfigFile.load(path).profiles["staging"] == {"url": "staging:443"}


def test_integral_numbers_print_as_ints_as_rest_does():
    struct = struct_pb2.Struct()
    struct.update({"count": 3, "ratio": 0.5, "nested": {"n": [1, 2.0, 2.5]}, "big": 2.0**60})
    assert struct_to_dict(struct) == {"count": 3, "ratio": 0.5, "nested": {"n": [1, 2, 2.5]}, "big": 2.0**60}
    bot = bot_pb2.Bot(name="b", config=struct)
    assert json.dumps(to_dict(bot)["config"]["count"]) == "3"


def test_a_refresh_race_refreshes_once():
    credentials = Credentials(access_token="new", refresh_token="r")
    expired = AuthenticationError(code=grpc.StatusCode.UNAUTHENTICATED, message="", reason="TOKEN_EXPIRED")
    assert credentials.recovery(expired, Used.SESSION, "new") is Recovery.REFRESH
    assert credentials.recovery(expired, Used.SESSION, "old") is Recovery.RETRY  # another call refreshed
    refused = AuthenticationError(code=grpc.StatusCode.UNAUTHENTICATED, message="", reason="API_KEY_INVALID")
    told = []
    keyed = Credentials(api_key="k", access_token="t", on_api_key_refused=told.append)
    assert keyed.recovery(refused, Used.API_KEY, None) is Recovery.RETRY and keyed.api_key is None and told
    assert Credentials(api_key="k").recovery(refused, Used.API_KEY, None) is Recovery.NONE  # no session to use


# -- retries: gRPC's own, from the client's service config, against a real (tiny) gRPC server ---------------


class Flaky(health_service_pb2_grpc.HealthServiceServicer, bot_service_pb2_grpc.BotServiceServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls of each method."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def _maybe_fail(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    async def GetHealth(self, request, context):
        await self._maybe_fail("GetHealth", context)
        return health_service_pb2.GetHealthResponse(status="ok")

    async def StopBot(self, request, context):
        await self._maybe_fail("StopBot", context)
        return bot_pb2.Bot(id=request.id)


@pytest.fixture
async def flaky():
    server = grpc.aio.server()
    servicer = Flaky(failures=2)
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(servicer, server)
    bot_service_pb2_grpc.add_BotServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_idempotent_calls_are_retried_on_unavailable_and_others_are_not(flaky):
    servicer, target = flaky
    with The0Client(target) as client:
        assert (await asyncio.to_thread(client.health)).status == "ok"
        assert servicer.calls["GetHealth"] == 3
        with pytest.raises(UnavailableError):
            await asyncio.to_thread(client.stop_bot, "00000000-0000-0000-0000-000000000000")
        assert servicer.calls["StopBot"] == 1  # not idempotent: the caller decides
    servicer.calls.clear()
    async with AsyncThe0Client(target) as aio_client:
        assert (await aio_client.health()).status == "ok"
        assert servicer.calls["GetHealth"] == 3


def test_docs_cli_lists_every_command():
    import typer

    from the0.client.cli.app import root

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()

    def commands(group, path):
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command, [*path, name]) if hasattr(command, "commands") else [[*path, name]]

    missing = [" ".join(path) for path in commands(typer.main.get_command(root), [])
               if f"`the0 {' '.join(path)}" not in text]
    assert missing == []
