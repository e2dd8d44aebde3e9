"""`the0 backtests`: run a custom bot's backtest entrypoint on past data, read its results and logs."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

import typer
from rich.table import Table

from the0.backtest.v1 import backtest_pb2
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
from the0.client.cli.output import show, show_list, show_text
from the0.client.cli.runtime import current
from the0.client.values import plain_numbers

app = typer.Typer(help="Backtests: create, watch until done, read results and logs, cancel.", no_args_is_help=True)
BacktestId = Annotated[str, typer.Argument(metavar="ID", help="The backtest's id (`the0 backtests list`).")]


class BacktestState(str, Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the backtest.")],
    config: Config = None,
    sets: Sets = None,
    request_id: RequestId = None,
) -> None:
    """Start a backtest. The config names an approved custom bot with a backtest entrypoint:

    --config '{"type": "scheduled/sma-crossover", "version": "1.0.0", ...}'
    """
    values = config_from(config, sets)
    assert values is not None
    show(current().client.create_backtest(name, values, request_id=request_id), "backtest")


@app.command("list")
def list_backtests(
    state: Annotated[BacktestState | None, typer.Option(help="Only backtests in this state.")] = None,
    page_size: PageSize = 50, page_token: PageToken = "", all_pages: AllPages = False,
) -> None:
    """Your backtests, newest first."""
    client = current().client
    number = backtest_pb2.BacktestState.Value(f"BACKTEST_STATE_{state.value.upper()}") if state else 0
    items, token = collect(lambda t: client.list_backtests(state=number, page_size=page_size, page_token=t),
                           "backtests", all_pages=all_pages, page_token=page_token)
    show_list(items, "backtest", next_page_token=token)


@app.command()
def get(backtest_id: BacktestId) -> None:
    """One backtest: state, summary metrics, error."""
    show(current().client.get_backtest(backtest_id), "backtest")


@app.command()
def results(backtest_id: BacktestId) -> None:
    """A completed backtest's analysis.json (metrics, plots, tables); a table of its metrics on a terminal."""
    runtime = current()
    raw = runtime.client.backtest_results(backtest_id)
    analysis: Any = plain_numbers(json.loads(raw))
    metrics = analysis.get("metrics") if isinstance(analysis, dict) else None
    if runtime.output != "table" or not isinstance(metrics, dict):
        show(analysis, "results")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("METRIC")
    table.add_column("VALUE", justify="right")
    for key, value in metrics.items():
        table.add_row(str(key), value if isinstance(value, str) else json.dumps(value))
    runtime.out.print(table)
    others = [key for key in analysis if key != "metrics"]
    if others:
        runtime.err.print(f"also in the results: {', '.join(others)} (--output json shows everything)",
                          markup=False)


@app.command()
def logs(backtest_id: BacktestId) -> None:
    """The backtest's logs.txt, as the runtime wrote it."""
    show_text(current().client.backtest_logs(backtest_id).decode(errors="replace"))


@app.command()
def cancel(backtest_id: BacktestId, yes: Yes = False) -> None:
    """Cancel a pending or running backtest (asks first)."""
    confirm(f"Cancel backtest {backtest_id}?", yes)
    show(current().client.cancel_backtest(backtest_id), "backtest")


@app.command("watch")
def watch_backtest(backtest_id: BacktestId) -> None:
    """Print each change of the backtest's state until it completes, fails or is cancelled. Ctrl-C stops."""
    watch(current().client.watch_backtest(backtest_id), "backtest", state_line)


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="backtests", rich_help_panel="Resources")
