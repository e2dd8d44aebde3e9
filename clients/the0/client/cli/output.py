"""Printing results: a table (or a field list) for people, JSON or YAML for programs.

Values are the REST API's JSON (``the0.client.values.to_dict``: lowerCamelCase, integral numbers as
ints), so `--output json` prints what `curl` would. Tables pick a few columns per kind of resource,
show states without their enum prefix and times as "3m ago".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from google.protobuf.message import Message
from rich.table import Table
from rich.text import Text

from the0.client.cli.runtime import current
from the0.client.values import to_dict

Getter = Callable[[dict[str, Any]], str]

STATE_STYLES = {
    "running": "green", "approved": "green", "completed": "green", "active": "green", "ok": "green",
    "deploying": "yellow", "pending": "yellow", "pending review": "yellow", "stopping": "yellow",
    "awaiting human review": "yellow", "draft": "cyan",
    "failed": "red", "declined": "red", "revoked": "red", "expired": "red", "cancelled": "red",
    "stopped": "dim", "disabled": "red",
}

_PREFIXES = ("BOT_EXECUTION_STATE_", "BOT_STATE_", "CUSTOM_BOT_STATE_", "BACKTEST_STATE_", "API_KEY_STATE_",
             "CUSTOM_BOT_TYPE_", "RUNTIME_", "ROLE_")


def plain_enum(value: str) -> str:
    """``BOT_STATE_RUNNING`` -> ``running``; runtimes as in bot-config.yaml (``python3.11``)."""
    if value.startswith("RUNTIME_"):
        return value[len("RUNTIME_"):].lower().replace("_", ".")
    for prefix in _PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix):].lower().replace("_", " ")
    return value


def ago(value: str | None, *, exact: bool = False) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    seconds = (datetime.now(UTC) - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size or unit == "s":
            amount = f"{int(seconds // size)}{unit}"
            break
    relative = f"in {amount}" if future else f"{amount} ago"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({relative})" if exact else relative


def _get(path: str) -> Getter:
    def get(item: dict[str, Any]) -> str:
        value: Any = item
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is None or value == "":
            return "-"
        return value if isinstance(value, str) else json.dumps(value)
    return get


def _state(path: str = "state") -> Getter:
    return lambda item: plain_enum(_get(path)(item))


def _scopes(item: dict[str, Any]) -> str:
    return ",".join(item.get("scopes") or []) or "-"


def _time(path: str) -> Getter:
    return lambda item: ago(item.get(path))


@dataclass(frozen=True)
class View:
    columns: Sequence[tuple[str, Getter]]
    fields: Sequence[tuple[str, Getter]]  # the detail view of one resource


def _bot_type(item: dict[str, Any]) -> str:
    return _get("config.type")(item)


VIEWS: dict[str, View] = {
    "bot": View(
        columns=[("ID", _get("id")), ("NAME", _get("name")), ("TYPE", _bot_type), ("VERSION", _get("config.version")),
                 ("STATE", _state()), ("UPDATED", _time("updateTime"))],
        fields=[("id", _get("id")), ("name", _get("name")), ("state", _state()), ("type", _bot_type),
                ("version", _get("config.version")), ("custom bot", _get("customBotId")),
                ("last execution", _state("lastExecution.state")), ("error", _get("error")),
                ("etag", _get("etag")), ("created", lambda i: ago(i.get("createTime"), exact=True)),
                ("updated", lambda i: ago(i.get("updateTime"), exact=True)), ("config", _get("config"))],
    ),
    "custom_bot": View(
        columns=[("ID", _get("id")), ("NAME", _get("name")), ("VERSION", _get("version")),
                 ("TYPE", _state("manifest.type")), ("RUNTIME", _state("manifest.runtime")), ("STATE", _state()),
                 ("CREATED", _time("createTime"))],
        fields=[("id", _get("id")), ("name", _get("name")), ("version", _get("version")), ("state", _state()),
                ("description", _get("manifest.description")), ("author", _get("manifest.author")),
                ("type", _state("manifest.type")), ("runtime", _state("manifest.runtime")),
                ("size", lambda i: human_bytes(int(_get("archive.sizeBytes")(i) or 0))
                 if _get("archive.sizeBytes")(i) != "-" else "-"),
                ("sha256", _get("archive.sha256")), ("review score", _get("review.score")),
                ("review reasons", lambda i: "; ".join(i.get("review", {}).get("reasons", [])) or "-"),
                ("created", lambda i: ago(i.get("createTime"), exact=True))],
    ),
    "backtest": View(
        columns=[("ID", _get("id")), ("NAME", _get("name")), ("TYPE", _bot_type), ("STATE", _state()),
                 ("CREATED", _time("createTime"))],
        fields=[("id", _get("id")), ("name", _get("name")), ("state", _state()), ("type", _bot_type),
                ("version", _get("config.version")), ("error", _get("error")), ("summary", _get("summary")),
                ("created", lambda i: ago(i.get("createTime"), exact=True)),
                ("started", lambda i: ago(i.get("startTime"), exact=True)),
                ("ended", lambda i: ago(i.get("endTime"), exact=True)), ("config", _get("config"))],
    ),
    "audit_event": View(
        columns=[("TIME", _time("time")), ("TYPE", _get("type")), ("ACTOR", _get("actorId")),
                 ("SUBJECT", _get("subjectUserId")), ("ADDRESS", _get("clientAddress"))],
        fields=[],
    ),
    "api_key": View(
        columns=[("ID", _get("id")), ("NAME", _get("name")), ("PREFIX", _get("prefix")), ("STATE", _state()),
                 ("SCOPES", _scopes), ("CREATED", _time("createTime")), ("EXPIRES", _time("expireTime")),
                 ("LAST USED", _time("lastUsedTime"))],
        fields=[("id", _get("id")), ("name", _get("name")), ("prefix", _get("prefix")), ("state", _state()),
                ("scopes", _scopes), ("created", lambda i: ago(i.get("createTime"), exact=True)),
                ("expires", lambda i: ago(i.get("expireTime"), exact=True)),
                ("last used", lambda i: ago(i.get("lastUsedTime"), exact=True))],
    ),
    "user": View(
        columns=[("ID", _get("id")), ("EMAIL", _get("email")), ("USERNAME", _get("username")),
                 ("ROLE", _state("role"))],
        fields=[("id", _get("id")), ("email", _get("email")), ("username", _get("username")),
                ("name", lambda i: " ".join(filter(None, (i.get("firstName"), i.get("lastName")))) or "-"),
                ("role", _state("role")), ("last login", lambda i: ago(i.get("lastLoginTime"), exact=True)),
                ("two-factor", lambda i: "on" if i.get("twoFactorEnabled") else "off")],
    ),
    "session": View(
        columns=[("ID", _get("id")), ("CURRENT", lambda i: "*" if i.get("current") else ""),
                 ("USER AGENT", _get("userAgent")), ("ADDRESS", _get("clientAddress")),
                 ("CREATED", _time("createTime")), ("LAST USED", _time("lastUseTime"))],
        fields=[],
    ),
    "account": View(  # a user as admins see it: its state too
        columns=[("ID", _get("id")), ("EMAIL", _get("email")), ("USERNAME", _get("username")),
                 ("ROLE", _state("role")), ("STATE", lambda i: "active" if i.get("active") else "disabled"),
                 ("CREATED", _time("createTime")), ("LAST LOGIN", _time("lastLoginTime"))],
        fields=[("id", _get("id")), ("email", _get("email")), ("username", _get("username")),
                ("name", lambda i: " ".join(filter(None, (i.get("firstName"), i.get("lastName")))) or "-"),
                ("role", _state("role")), ("state", lambda i: "active" if i.get("active") else "disabled"),
                ("email verified", lambda i: "yes" if i.get("emailVerified") else "no"),
                ("password reset required", lambda i: "yes" if i.get("passwordResetRequired") else "no"),
                ("created", lambda i: ago(i.get("createTime"), exact=True)),
                ("last login", lambda i: ago(i.get("lastLoginTime"), exact=True))],
    ),
    "execution": View(
        columns=[("ID", _get("id")), ("STATE", _state()), ("STARTED", _time("startTime")),
                 ("ENDED", _time("endTime")), ("RESULT", _get("result")), ("ERROR", _get("error"))],
        fields=[],
    ),
}


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def as_value(item: Message | dict[str, Any]) -> dict[str, Any]:
    return to_dict(item) if isinstance(item, Message) else item


def _styled(text: str) -> Text:
    return Text(text, style=STATE_STYLES.get(text, ""))


def _write(text: str) -> None:
    # Machine output goes to stdout as is: Rich would wrap long lines and read ":name:" as emoji.
    sys.stdout.write(text)
    sys.stdout.flush()


def _dump(value: Any) -> None:
    if current().output == "yaml":
        _write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
    else:
        _write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def show(item: Message | dict[str, Any], kind: str) -> None:
    """One resource: its important fields for people, the whole of it for programs."""
    value = as_value(item)
    runtime = current()
    if runtime.output == "id":
        _write(f"{_id(value)}\n")
        return
    if runtime.output != "table":
        _dump(value)
        return
    view = VIEWS.get(kind)
    fields = view.fields if view and view.fields else [(key, _get(key)) for key in value]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, get in fields:
        text = get(value)
        table.add_row(label, _styled(text) if label == "state" else Text(text))
    runtime.out.print(table)


def show_list(items: Iterable[Message | dict[str, Any]], kind: str, *, next_page_token: str = "") -> None:
    values = [as_value(item) for item in items]
    runtime = current()
    if runtime.output == "id":
        _write("".join(f"{_id(value)}\n" for value in values))
    elif runtime.output != "table":
        _dump(values)
    else:
        view = VIEWS.get(kind)
        columns = view.columns if view else [(key.upper(), _get(key)) for key in (values[0] if values else {})]
        table = Table(box=None, pad_edge=False, header_style="bold")
        for label, _ in columns:
            table.add_column(label, overflow="fold")
        for value in values:
            table.add_row(*(_styled(get(value)) if label == "STATE" else Text(get(value)) for label, get in columns))
        if values:
            runtime.out.print(table)
        else:
            runtime.err.print("(none)", markup=False)
    if next_page_token:
        runtime.err.print(f"more: --page-token {next_page_token}  (or --all)", markup=False, highlight=False)


def _id(value: dict[str, Any]) -> str:
    """What `--output id` prints: the resource's id (a created key's id, not its secret)."""
    return str(value.get("id") or value.get("apiKey", {}).get("id") or value.get("path") or value.get("name", ""))


def show_line(value: dict[str, Any], text: str) -> None:
    """One event of a watch or log stream: a line of JSON for programs, a line of text for people."""
    _write((text if current().output == "table" else json.dumps(value, ensure_ascii=False)) + "\n")


def show_text(text: str) -> None:
    _write(text)
