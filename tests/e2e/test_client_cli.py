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
