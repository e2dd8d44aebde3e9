"""``the0``: the command-line client, built only on ``The0Client``.

Credentials come from THE0_API_KEY, or from the config file
(``~/.the0/config.json``, or THE0_CONFIG) written by ``login`` and
``api-keys create --save``. Output is JSON: one object, or one per line for
lists and watches, so it pipes into jq.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from the0.bot.v1 import bot_service_pb2
from the0.client.client import The0Client
from the0.client.errors import The0Error, UnavailableError

DEFAULT_URL = "localhost:50051"


def config_path() -> Path:
    return Path(os.environ.get("THE0_CONFIG") or Path.home() / ".the0" / "config.json")


def load_config() -> dict[str, str]:
    path = config_path()
    return json.loads(path.read_text()) if path.exists() else {}


def save_config(config: dict[str, str]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # it holds credentials
    path.write_text(json.dumps(config, indent=2))


def emit(value: Message | Iterable[Message] | dict[str, Any]) -> None:
    if isinstance(value, Message):
        print(json.dumps(MessageToDict(value), indent=2))
    elif isinstance(value, dict):
        print(json.dumps(value, indent=2))
    else:
        for item in value:
            print(json.dumps(MessageToDict(item)), flush=True)


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("password: ")


def zip_directory(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts):
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def parse_config(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise SystemExit("the0: --config must be a JSON object")
    return value


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# How long `logs -f` waits before resuming a stream the server or network dropped.
RECONNECT_SECONDS = 1.0


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``90s``, ``15m``, ``1h``, ``2d`` ago, or an ISO 8601 time (naive means UTC)."""
    if match := _DURATION.match(text.strip()):
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"the0: --since must be like 30s, 15m, 1h, 2d or an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def print_log_line(line: bot_service_pb2.BotLogLine, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(MessageToDict(line)), flush=True)
    else:
        print(f"{line.time.ToJsonString()} {line.level or '-':<5} {line.text}", flush=True)


def bot_logs(args: argparse.Namespace, client: The0Client) -> None:
    """Past lines (--since, ListBotLogs); with -f, then every new line (StreamBotLogs), resumed after drops."""
    cursor = ""
    if args.since or not args.follow:
        since = parse_since(args.since) if args.since else None
        for line in client.list_bot_logs(args.id, since=since):
            print_log_line(line, as_json=args.json)
            cursor = line.cursor
    if not args.follow:
        return
    # The first stream starts after what was printed (or with the last --tail lines); a resumed one after
    # the last line seen, so a dropped connection loses no line and repeats none.
    tail = 0 if args.since else args.tail
    while True:
        try:
            for message in client.stream_bot_logs(args.id, tail_lines=0 if cursor else tail, after_cursor=cursor):
                kind = message.WhichOneof("event")
                if kind == "line":
                    print_log_line(message.line, as_json=args.json)
                    cursor = message.line.cursor
                elif kind == "deleted":
                    print("the0: the bot was deleted", file=sys.stderr)
                    return
            return  # the server ended the stream
        except UnavailableError:
            print("the0: log stream interrupted; reconnecting", file=sys.stderr)
            time.sleep(RECONNECT_SECONDS)


def run(args: argparse.Namespace, client: The0Client, config: dict[str, str]) -> None:
    command = (args.command, getattr(args, "action", None))
    if command == ("health", None):
        emit(client.health())
    elif command == ("register", None):
        tokens = client.register(args.email, read_password(args), args.username)
        save_config({**config, "accessToken": tokens.access_token, "refreshToken": tokens.refresh_token})
        emit(tokens.user)
    elif command == ("login", None):
        tokens = client.login(args.email, read_password(args))
        save_config({**config, "accessToken": tokens.access_token, "refreshToken": tokens.refresh_token})
        emit(tokens.user)
    elif command == ("logout", None):
        client.logout()
        save_config({k: v for k, v in config.items() if k not in {"accessToken", "refreshToken"}})
    elif command == ("whoami", None):
        emit(client.me())
    elif command == ("api-keys", "create"):
        created = client.create_api_key(args.name)
        if args.save:
            save_config({**config, "apiKey": created.secret})
        emit(created)
    elif command == ("api-keys", "list"):
        emit(client.list_api_keys())
    elif command == ("api-keys", "revoke"):
        emit(client.revoke_api_key(args.id))
    elif command == ("custom-bots", "upload"):
        source = Path(args.path)
        emit(client.upload_custom_bot(zip_directory(source) if source.is_dir() else source))
    elif command == ("custom-bots", "list"):
        emit(client.list_custom_bots(name=args.name or ""))
    elif command == ("custom-bots", "get"):
        emit(client.get_custom_bot(args.id))
    elif command == ("custom-bots", "download"):
        with open(args.output, "wb") as file:
            file.writelines(client.download_custom_bot_archive(args.id))
    elif command == ("custom-bots", "watch"):
        emit(client.watch_custom_bot(args.id))
    elif command == ("bots", "create"):
        emit(client.create_bot(args.name, parse_config(args.config), request_id=args.request_id or ""))
    elif command == ("bots", "list"):
        emit(client.list_bots())
    elif command == ("bots", "get"):
        emit(client.get_bot(args.id))
    elif command == ("bots", "deploy"):
        emit(client.deploy_bot(args.id))
    elif command == ("bots", "stop"):
        emit(client.stop_bot(args.id))
    elif command == ("bots", "delete"):
        client.delete_bot(args.id)
    elif command == ("bots", "watch"):
        emit(client.watch_bot(args.id))
    elif command == ("bots", "executions"):
        executions = client.list_bot_executions(args.id)
        emit(execution for _, execution in zip(range(args.limit), executions, strict=False))
    elif command == ("bots", "logs"):
        bot_logs(args, client)
    elif command == ("backtests", "create"):
        emit(client.create_backtest(args.name, parse_config(args.config), request_id=args.request_id or ""))
    elif command == ("backtests", "list"):
        emit(client.list_backtests())
    elif command == ("backtests", "get"):
        emit(client.get_backtest(args.id))
    elif command == ("backtests", "results"):
        sys.stdout.write(client.backtest_results(args.id).decode() + "\n")
    elif command == ("backtests", "logs"):
        sys.stdout.write(client.backtest_logs(args.id).decode())
    elif command == ("backtests", "cancel"):
        emit(client.cancel_backtest(args.id))
    elif command == ("backtests", "watch"):
        emit(client.watch_backtest(args.id))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="the0", description="Command-line client of the0 API (gRPC).")
    parser.add_argument("--url", help=f"gRPC address (THE0_API_URL, config, default {DEFAULT_URL})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("health", help="server and dependency health")
    for name in ("register", "login"):
        sub = commands.add_parser(name, help=f"{name} and keep the session in the config file")
        sub.add_argument("--email", required=True)
        if name == "register":
            sub.add_argument("--username", required=True)
        sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    commands.add_parser("logout", help="end the saved session")
    commands.add_parser("whoami", help="the current user")

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return commands.add_parser(name, help=help_text).add_subparsers(dest="action", required=True)

    keys = group("api-keys", "manage API keys (needs a login session)")
    create = keys.add_parser("create")
    create.add_argument("name")
    create.add_argument("--save", action="store_true", help="use the new key for later commands")
    keys.add_parser("list")
    keys.add_parser("revoke").add_argument("id")

    custom = group("custom-bots", "upload and follow your bot code")
    custom.add_parser("upload", help="a .zip, or a directory to zip").add_argument("path")
    custom.add_parser("list").add_argument("--name")
    custom.add_parser("get").add_argument("id")
    download = custom.add_parser("download")
    download.add_argument("id")
    download.add_argument("-o", "--output", required=True)
    custom.add_parser("watch").add_argument("id")

    for name, noun in (("bots", "bot"), ("backtests", "backtest")):
        resource = group(name, f"manage your {name}")
        create = resource.add_parser("create")
        create.add_argument("name")
        create.add_argument("--config", required=True, help="JSON object, or @file.json")
        create.add_argument("--request-id")
        resource.add_parser("list")
        actions = ("get", "deploy", "stop", "delete", "watch") if noun == "bot" else (
            "get", "results", "logs", "cancel", "watch")
        for action in actions:
            resource.add_parser(action).add_argument("id")
        if noun == "bot":
            executions = resource.add_parser("executions", help="the bot's runs, newest first (JSON lines)")
            executions.add_argument("id")
            executions.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
            logs = resource.add_parser("logs", help="the bot's log lines, oldest first")
            logs.add_argument("id")
            logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
            logs.add_argument("--since", help="lines from this long ago (30s, 15m, 1h, 2d) or an ISO 8601 time")
            logs.add_argument("--tail", type=int, default=20,
                              help="with -f and no --since: start with the last N lines (default 20, at most 1000)")
            logs.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config()
    url = args.url or os.environ.get("THE0_API_URL") or config.get("url") or DEFAULT_URL
    api_key = os.environ.get("THE0_API_KEY") or config.get("apiKey")
    # API-key management and logout need the user session; everything else prefers the API key.
    session_only = args.command in {"api-keys", "logout"}
    token = config.get("accessToken") if session_only or not api_key else None
    with The0Client(url, api_key=None if token else api_key, access_token=token) as client:
        try:
            run(args, client, config)
        except The0Error as error:
            print(f"the0: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
