"""`the0 bots`: deployed instances of your custom bots (docs/bots-and-backtests.md)."""

from __future__ import annotations

import time
from enum import Enum
from typing import Annotated

import typer

from the0.bot.v1 import bot_pb2, bot_service_pb2
from the0.client.cli.common import (
    AllPages,
    Config,
    PageSize,
    PageToken,
    RequestId,
    Sets,
    Yes,
    collect,
    config_from,
    confirm,
    state_line,
    watch,
)
from the0.client.cli.failures import NOT_AUTHENTICATED, USAGE, CliError
from the0.client.cli.output import plain_enum, show, show_line, show_list
from the0.client.cli.parsing import parse_time
from the0.client.cli.runtime import current
from the0.client.errors import UnavailableError
from the0.client.values import struct_to_dict, to_dict

app = typer.Typer(help="Bots: create from an approved custom bot, deploy, watch, update, stop, delete.",
                  no_args_is_help=True)
BotId = Annotated[str, typer.Argument(metavar="ID", help="The bot's id (`the0 bots list`).")]
# How long `logs -f` waits before resuming a stream the server or network dropped.
RECONNECT_SECONDS = 1.0
ACTIVE = (bot_pb2.BOT_STATE_DEPLOYING, bot_pb2.BOT_STATE_RUNNING, bot_pb2.BOT_STATE_STOPPING)


class BotState(str, Enum):
    draft = "draft"
    deploying = "deploying"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the bot.")],
    config: Config = None,
    sets: Sets = None,
    request_id: RequestId = None,
) -> None:
    """Create a bot (state draft). The config names the custom bot and version, and its settings:

    --config '{"type": "scheduled/sma-crossover", "version": "1.0.0", "schedule": "*/5 * * * *", ...}'

    type: <scheduled|realtime|event>/<custom bot name>; version: an approved one; schedule: a cron.

    The other keys are the custom bot's settings (its botSchema); docs/bots-and-backtests.md tells more.
    """
    values = config_from(config, sets)
    assert values is not None
    show(current().client.create_bot(name, values, request_id=request_id), "bot")


@app.command("list")
def list_bots(
    state: Annotated[BotState | None, typer.Option(help="Only bots in this state.")] = None,
    page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False,
) -> None:
    """Your bots, newest first."""
    client = current().client
    state_number = bot_pb2.BotState.Value(f"BOT_STATE_{state.value.upper()}") if state else 0
    bots, token = collect(lambda t: client.list_bots(state=state_number, page_size=page_size, page_token=t),
                          "bots", all_pages=all_pages, page_token=page_token)
    show_list(bots, "bot", next_page_token=token)


@app.command()
def get(bot_id: BotId) -> None:
    """One bot: state, config (secret fields masked), last execution, etag."""
    show(current().client.get_bot(bot_id), "bot")


@app.command()
def update(
    bot_id: BotId,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    config: Config = None,
    sets: Sets = None,
    etag: Annotated[str | None, typer.Option(help="Only if the bot still has this etag (`bots get`); "
                                                  "by default, the one read just before.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the whole bot (PUT): fields not given "
                                                            "are taken from the bot as it is.")] = False,
) -> None:
    """Change a bot's name or config. --set changes single keys and keeps the rest; --config replaces it.

    A running bot keeps running its old config until it is deployed again (`the0 bots deploy ID`).
    """
    client = current().client
    if name is None and config is None and not sets:
        raise CliError("nothing to change: give --name, --config or --set key=value", USAGE)
    bot = client.get_bot(bot_id)
    new_config = config_from(config, sets, base=struct_to_dict(bot.config), required=False)
    if replace:
        name = name if name is not None else bot.name
        new_config = new_config if new_config is not None else struct_to_dict(bot.config)
    updated = client.update_bot(bot_id, name=name, config=new_config, etag=etag or bot.etag, replace=replace)
    show(updated, "bot")
    if updated.state in ACTIVE:
        current().err.print("The bot runs the old config until deployed again: `the0 bots deploy "
                            f"{bot_id}`", markup=False)


@app.command()
def delete(bot_id: BotId, yes: Yes = False) -> None:
    """Delete a bot (asks first; a running bot is stopped by the platform)."""
    client = current().client
    bot = client.get_bot(bot_id)
    state = plain_enum(bot_pb2.BotState.Name(bot.state))
    warning = f" It is {state}: deleting it stops it." if bot.state in ACTIVE else ""
    confirm(f"Delete bot {bot.name} ({bot.id})?{warning}", yes)
    client.delete_bot(bot_id, etag=bot.etag)  # what was confirmed, not a bot changed meanwhile
    current().err.print(f"Deleted bot {bot.name} ({bot.id})", markup=False)


@app.command()
def deploy(bot_id: BotId, request_id: RequestId = None) -> None:
    """Ask the platform to run the bot (draft, stopped or failed; or again after an update)."""
    show(current().client.deploy_bot(bot_id, request_id=request_id), "bot")


@app.command()
def stop(bot_id: BotId) -> None:
    """Ask the platform to stop the bot (state stopping, then stopped)."""
    show(current().client.stop_bot(bot_id), "bot")


@app.command("watch")
def watch_bot(bot_id: BotId) -> None:
    """Print each change of the bot's state (and each new execution) until it is deleted. Ctrl-C stops."""
    watch(current().client.watch_bot(bot_id), "bot", state_line)


@app.command()
def executions(bot_id: BotId, page_size: PageSize = 50, page_token: PageToken = "",
               all_pages: AllPages = False) -> None:
    """The bot's runs, newest first."""
    client = current().client
    items, token = collect(lambda t: client.list_bot_executions(bot_id, page_size=page_size, page_token=t),
                           "executions", all_pages=all_pages, page_token=page_token)
    show_list(items, "execution", next_page_token=token)


def _print_line(line: bot_service_pb2.BotLogLine) -> None:
    show_line(to_dict(line), f"{line.time.ToJsonString()} {line.level or '-':<5} {line.text}")


@app.command()
def logs(
    bot_id: BotId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (resumes after a drop).")]
    = False,
    since: Annotated[str | None, typer.Option(help="Lines from this long ago (30s, 15m, 1h, 2d) or an ISO 8601 "
                                                   "time.")] = None,
    tail: Annotated[int, typer.Option(min=0, max=1000, help="With -f and no --since: start with the last N "
                                                            "lines.")] = 20,
) -> None:
    """The bot's log lines, oldest first; -f keeps following."""
    client = current().client
    cursor = ""
    if since or not follow:
        for line in client.iter_bot_logs(bot_id, since=parse_time(since, "--since") if since else None):
            _print_line(line)
            cursor = line.cursor
    if not follow:
        return
    # The first stream starts after what was printed (or with the last --tail lines); a resumed one after
    # the last line seen, so a dropped connection loses no line and repeats none.
    first_tail = 0 if since else tail
    while True:
        try:
            for message in client.stream_bot_logs(bot_id, tail_lines=0 if cursor else first_tail,
                                                  after_cursor=cursor):
                kind = message.WhichOneof("event")
                if kind == "line":
                    _print_line(message.line)
                    cursor = message.line.cursor
                elif kind == "deleted":
                    current().warn("the bot was deleted")
                    return
                elif kind == "unauthenticated":
                    reason = message.unauthenticated.reason
                    if reason != "TOKEN_EXPIRED" or not client.credentials.refresh_token:
                        raise CliError(f"the log stream ended: not authenticated [{reason}] — run `the0 login`",
                                       NOT_AUTHENTICATED)
                    client.refresh()  # and resume after the last line seen
                    break
            else:
                return  # the server ended the stream
        except UnavailableError:
            current().warn("log stream interrupted; reconnecting")
            time.sleep(RECONNECT_SECONDS)


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="bots", rich_help_panel="Resources")
