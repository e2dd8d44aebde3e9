"""Pieces the command modules share: option types, paging, confirmations, watching."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any

import typer

from the0.client.cli.failures import NOT_AUTHENTICATED, NOT_CONFIRMED, USAGE, CliError
from the0.client.cli.output import as_value, plain_enum, show_line
from the0.client.cli.parsing import apply_sets, parse_object

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
PageSize = Annotated[int, typer.Option("--page-size", min=1, max=200, help="Items per page (the server's limit is 200).")]
PageToken = Annotated[str, typer.Option("--page-token", help="Continue from where a previous page ended.")]
AllPages = Annotated[bool, typer.Option("--all", help="Every page, not just the first.")]
RequestId = Annotated[
    str | None,
    typer.Option("--request-id", help="Idempotency key: repeating the command with it has no second effect "
                                      "(one is made up when not given)."),
]
Config = Annotated[
    str | None, typer.Option("--config", "-c", help="The config as a JSON object, or @file.json / @file.yaml.")
]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Set one config key: key=value (a.b=value nests; values are JSON when "
                                     "they parse, else text). Repeatable."),
]


def collect(list_page: Callable[[str], Any], field: str, *, all_pages: bool, page_token: str
            ) -> tuple[list[Any], str]:
    """One page (or, with --all, every page): the items and the token of the next page, if any."""
    items: list[Any] = []
    token = page_token
    while True:
        page = list_page(token)
        items.extend(getattr(page, field))
        token = page.next_page_token
        if not all_pages or not token:
            return items, token


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive change; without a terminal, only --yes goes ahead."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question.rstrip('?')}: not confirmed (no terminal to ask on); add --yes", NOT_CONFIRMED)
    if not typer.confirm(question, default=False, err=True):
        raise CliError("not confirmed: nothing was changed", NOT_CONFIRMED)


def config_from(config: str | None, sets: list[str] | None, *, base: dict[str, Any] | None = None,
                required: bool = True) -> dict[str, Any] | None:
    """--config (whole) and --set (keys) into one config; None when neither was given and none is required."""
    if config is None and not sets:
        if required:
            raise CliError("give the config: --config '{\"type\": \"scheduled/NAME\", \"version\": \"1.0.0\", ...}' "
                           "or --config @config.json (and/or --set key=value)", USAGE)
        return None
    start = parse_object(config) if config is not None else dict(base or {})
    return apply_sets(start, sets or [])


def watch(events: Iterable[Any], resource_field: str, describe: Callable[[dict[str, Any]], str]) -> None:
    """Print each change of state (never heartbeats) until the server ends the stream."""
    last: tuple[Any, ...] | None = None
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "heartbeat":
            continue
        if kind == "deleted":
            show_line({"deleted": as_value(event.deleted)}, "deleted")
            return
        if kind == "unauthenticated":
            reason = event.unauthenticated.reason
            raise CliError(f"the watch ended: not authenticated [{reason}] — run `the0 login`", NOT_AUTHENTICATED)
        value = as_value(getattr(event, resource_field))
        key = (value.get("state"), value.get("error"), value.get("lastExecution", {}).get("id"))
        if key == last:
            continue
        last = key
        show_line(value, describe(value))


def state_line(value: dict[str, Any]) -> str:
    """``15:04:05  my-bot  running``: the time the change was seen, the resource, its state."""
    name = value.get("name", "")
    if value.get("version"):
        name += f" {value['version']}"
    text = f"{datetime.now():%H:%M:%S}  {name}  {plain_enum(value.get('state', ''))}"
    if value.get("error"):
        text += f"  ({value['error']})"
    return text
